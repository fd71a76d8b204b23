"""DVC stage `download`: every source in `data.train` and `data.eval` → data/raw/<slug>/ (path from dvc.yaml)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from srgan.core.atomic import atomic_dir
from srgan.core.config import flatten, load_params
from srgan.core.errors import exit_on_error
from srgan.core.runtime import project_root
from srgan.data.download import materialize
from srgan.data.sources import check_source, split_degradation
from srgan.tracking.runs import stage_run


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
    # Downloads and their resumable partial files live outside the declared out, which `dvc repro`
    # deletes before the stage runs, and are shared by DVC's temporary experiment copies.
    # The out appears only once every source is in: a kill leaves no partial folder under it.
    cache = project_root() / ".cache" / "download"
    with stage_run("download", flatten(params)) as tracker, atomic_dir(args.out) as staging:
        # `bsd100` and `bsd100@jpeg50` are one download.
        for name in dict.fromkeys((params.data.train, *(split_degradation(name)[0] for name in params.data.eval))):
            for folder in materialize(name, staging, cache, max_bytes=int(params.download.max_unpacked_gb * 1e9)):
                manifest = json.loads((folder / "manifest.json").read_text())
                relative = folder.relative_to(staging)
                label = relative.as_posix().replace("/", ".")
                tracker.log_metrics(
                    {f"files.{label}": len(manifest["files"]), f"skipped.{label}": len(manifest["skipped"])}, step=0
                )
                tracker.log_artifact(folder / "manifest.json", f"manifests/{label}")
                print(f"download: {name} -> {args.out / relative} ({len(manifest['files'])} files)")


if __name__ == "__main__":
    main()
