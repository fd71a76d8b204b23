"""DVC stage `download`: every source in `data.train` and `data.eval` → data/raw/<slug>/ (path from dvc.yaml)."""

from __future__ import annotations

import argparse
from pathlib import Path

from srgan.config import load_params
from srgan.download import materialize
from srgan.errors import exit_on_error
from srgan.sources import check_source

# Downloads and their resumable partial files live outside the declared out, which `dvc repro`
# deletes before the stage runs; relative to the working directory, the repo root under DVC.
CACHE = Path(".cache/download")


@exit_on_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="folder to write one subfolder per source into")
    args = parser.parse_args()
    params = load_params()
    # Every name is checked before anything is downloaded or written.
    check_source(params.data.train, "data.train")
    for i, name in enumerate(params.data.eval):
        check_source(name, f"data.eval[{i}]")
    for name in dict.fromkeys((params.data.train, *params.data.eval)):
        for folder in materialize(name, args.out, CACHE, max_bytes=int(params.download.max_unpacked_gb * 1e9)):
            print(f"download: {name} -> {folder}")


if __name__ == "__main__":
    main()
