"""Preprocess throughput on Mirflickr-sized JPEGs: all cores against one core.

    .venv/bin/python benchmarks/preprocess_throughput.py [--images 64] [--repeats 5]

Writes `--images` 500×375 JPEGs (Mirflickr25k's typical size) into a temp folder and runs
`srgan.data.preprocess.prepare` on them with the `preprocess` settings of params.yaml, once with
one worker per core and once in-process with one worker. The two are interleaved and repeated
because the machines are noisy; medians are reported. Times include the worker
pool's start-up, which the stage pays too.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from srgan.core.config import load_params
from srgan.data.preprocess import prepare

REPO = Path(__file__).resolve().parents[1]


def make_jpegs(folder: Path, count: int) -> None:
    """`count` 500×375 JPEGs: smooth colour gradients plus noise, roughly a photo's entropy."""
    y, x = np.mgrid[:375, :500]
    for i in range(count):
        rng = np.random.default_rng(i)
        phase = rng.uniform(0, 2 * np.pi, 3)
        base = 127 + 100 * np.sin(np.stack([x / 60 + phase[0], y / 45 + phase[1], (x + y) / 80 + phase[2]], axis=2))
        photo = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)  # (375, 500, 3)
        Image.fromarray(photo).save(folder / f"im{i}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    params = load_params(REPO / "params.yaml")
    cores = os.cpu_count() or 1
    seconds: dict[int, list[float]] = {cores: [], 1: []}
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        make_jpegs(images, args.images)
        for _ in range(args.repeats):
            for workers in seconds:
                settings = dataclasses.replace(params.preprocess, workers=workers)
                start = time.perf_counter()
                manifest = prepare(
                    images, {}, Path(tmp) / "out", seed=params.seed, scale=params.scale, settings=settings
                )
                seconds[workers].append(time.perf_counter() - start)
    patches = manifest["train"]["num_patches"] + manifest["val"]["num_patches"]
    rate = {workers: args.images / statistics.median(times) for workers, times in seconds.items()}
    print(
        f"{args.images} images of 500×375 -> {patches} patches of {params.preprocess.hr_size} "
        f"(stride {params.preprocess.stride}, scale {params.scale}); median of {args.repeats} runs each"
    )
    print(f"all {cores} cores: {rate[cores]:.1f} images/s")
    print(f"one core:     {rate[1]:.1f} images/s")
    print(f"ratio all-cores / one-core: {rate[cores] / rate[1]:.2f}")
    # Other processes competing for the cores shrink the ratio; show how busy the machine was.
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {cores} cores")


if __name__ == "__main__":
    main()
