"""Does bf16 training reach the same validation PSNR as fp32? (the project's bf16 acceptance check)

    python benchmarks/precision_parity.py [--data data/prepared] [--steps N]

Trains the default pretrain schedule (params.yaml's seed, scale, model and pretrain sections) in
fp32 and in bf16, for three seeds each, through the pipeline's own `srgan.training.jobs.pretrain`, and
compares the final validation PSNRs: bf16 passes when |mean bf16 − mean fp32| ≤ max(fp32 spread
over the seeds, 0.05 dB). The acceptance figure is the default schedule; `--steps` shortens it
for a quick look, which says little about parity at the end of the real schedule.

Every run gets its own temporary project root (`DVC_ROOT`, where the resumable checkpoint cache
lives) and MLflow store, so nothing lands in the repository and no run resumes from another's
checkpoint (the cache key holds the seed and the precision, but a fresh root also keeps the
repository's own `.cache` out of it).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from srgan.core.config import Params, load_params
from srgan.core.errors import SrganError, exit_on_error
from srgan.core.runtime import cpu_name
from srgan.tracking.runs import stage_run
from srgan.training.jobs import pretrain

PRECISIONS = ("fp32", "bf16")
SEEDS = 3
MIN_TOLERANCE_DB = 0.05


def prepared_dir() -> Path:
    """The preprocess stage's output folder, as dvc.yaml names it (the one place that path lives)."""
    variables = yaml.safe_load(Path("dvc.yaml").read_text())["vars"]
    return Path(next(v["prepared"] for v in variables if "prepared" in v))


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def final_val_psnr(curves: Path) -> float:
    """The last row's validation PSNR from the curves CSV that pretrain writes."""
    with curves.open(newline="") as handle:
        return float(list(csv.DictReader(handle))[-1]["val_psnr"])


def train_once(params: Params, data: Path, precision: str, seed: int) -> float:
    """One pretrain run in a temporary project root; returns its final validation PSNR (dB)."""
    run_params = dataclasses.replace(
        params, seed=seed, runtime=dataclasses.replace(params.runtime, precision=precision)
    )
    with tempfile.TemporaryDirectory(prefix=f"srgan-parity-{precision}-{seed}-") as root:
        with _environment(DVC_ROOT=root, MLFLOW_TRACKING_URI=f"sqlite:///{root}/mlflow.db"):
            curves = Path(root) / "pretrain.csv"
            job = pretrain(run_params, data, Path(root) / "srresnet.pt", curves)
            with stage_run("pretrain", job.run_params, resume=job.resume_run_id) as tracker:
                job.run(tracker)
            return final_val_psnr(curves)


def parity(psnrs: dict[str, list[float]]) -> tuple[float, float, float, bool]:
    """(fp32 spread, |mean bf16 − mean fp32|, tolerance, passed) for PSNRs per precision."""
    spread = max(psnrs["fp32"]) - min(psnrs["fp32"])
    difference = abs(statistics.mean(psnrs["bf16"]) - statistics.mean(psnrs["fp32"]))
    tolerance = max(spread, MIN_TOLERANCE_DB)
    return spread, difference, tolerance, difference <= tolerance


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="preprocessed shards folder (default: dvc.yaml's prepared folder)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")
    parser.add_argument(
        "--steps", type=int, help="pretrain steps instead of params.yaml's (a quick look, not the acceptance figure)"
    )
    args = parser.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be at least 1")
    data = args.data or prepared_dir()
    if not (data / "train").is_dir() or not (data / "val").is_dir():
        raise SrganError(
            f"{data}: no preprocessed shards (train/ and val/); run `dvc repro preprocess` first, "
            "or pass --data to a folder the preprocess stage wrote"
        )
    params = load_params(args.params)
    if args.steps is not None:
        params = dataclasses.replace(params, pretrain=dataclasses.replace(params.pretrain, steps=args.steps))
    schedule = "default schedule" if args.steps is None else "SHORTENED schedule (not the acceptance figure)"
    print(
        f"pretrain {params.pretrain.steps} steps, {schedule}; {params.model.blocks} blocks; {cpu_name()}; data {data}"
    )
    psnrs: dict[str, list[float]] = {precision: [] for precision in PRECISIONS}
    for seed in range(params.seed, params.seed + SEEDS):
        for precision in PRECISIONS:
            started = time.perf_counter()
            psnr = train_once(params, data, precision, seed)
            psnrs[precision].append(psnr)
            print(
                f"{precision} seed {seed}: val PSNR {psnr:.4f} dB ({time.perf_counter() - started:.0f} s)", flush=True
            )
    spread, difference, tolerance, passed = parity(psnrs)
    for precision, values in psnrs.items():
        print(
            f"{precision}: mean {statistics.mean(values):.4f} dB, spread (max-min) {max(values) - min(values):.4f} dB"
        )
    print(
        f"|mean bf16 - mean fp32| = {difference:.4f} dB, tolerance max(fp32 spread {spread:.4f}, {MIN_TOLERANCE_DB}) "
        f"= {tolerance:.4f} dB: {'PASS' if passed else 'FAIL'}"
    )
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
