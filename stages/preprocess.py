"""DVC stage `preprocess`: data/raw -> uint8 patch shards, eval PNGs and a manifest.

    python -m stages.preprocess --raw data/raw --out data/prepared

The paths come from dvc.yaml; everything else from the `seed`, `scale`, `data` and
`preprocess` sections of params.yaml.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from srgan.core.config import flatten, load_params
from srgan.core.errors import exit_on_error
from srgan.data.preprocess import MANIFEST, preprocess


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", type=Path, required=True, help="folder the download stage wrote")
    parser.add_argument("--out", type=Path, required=True, help="folder to write shards, eval PNGs and manifest to")
    args = parser.parse_args(argv)
    params = load_params()
    # Imported here, not at the top: the decoding pool's spawned workers import this module again
    # (as `__mp_main__`), and with mlflow and torch each of them would hold ~600 MB more.
    from srgan.tracking.runs import stage_run

    with stage_run("preprocess", flatten(params)) as tracker:
        manifest = preprocess(params, args.raw, args.out)
        train, val = manifest["train"], manifest["val"]
        counts = {
            "train_images": train["num_images"],
            "train_patches": train["num_patches"],
            "val_images": val["num_images"],
            "val_patches": val["num_patches"],
            "skipped": len(manifest["skipped"]),
            **{f"eval_images.{slug}": entry["num_images"] for slug, entry in manifest["eval"].items()},
        }
        tracker.log_metrics(counts, step=0)
        tracker.log_artifact(args.out / MANIFEST)
    for warning in manifest["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    evals = ", ".join(f"{slug} {entry['num_images']}" for slug, entry in manifest["eval"].items())
    print(
        f"preprocess: train {train['num_images']} images / {train['num_patches']} patches, "
        f"val {val['num_images']} / {val['num_patches']}, eval images: {evals}, "
        f"skipped {len(manifest['skipped'])} (see {args.out / MANIFEST})"
    )


if __name__ == "__main__":
    main()
