"""Can the training loader feed the training step? Batches/s of the loader against steps/s of the update.

The loader is the training stages' own: `RandomCrops` (aligned random crops, one of 8
flips/rotations) through `batch_loader`, from memory-mapped uint8 shards, with 1, 2, 4 … worker
processes up to the cores. The consumer is the SRResNet update (`mse_step`, the paper's 16-block
generator, fused Adam) on the same 64→256 batches of 8, on `--device` at the precision
`runtime.precision: auto` picks. A step needs one batch, so the loader keeps up while its
batches/s exceed the steps/s; the ratio is printed for each worker count.

    python benchmarks/loader_feed.py [--device auto|cpu|cuda] [--patches 4096]

The shards here are random pixels (`--patches` of them, written to a temporary folder): the
loader's cost does not depend on the content. `data_scale.py` runs the same two measurements on
shards that the preprocess stage wrote from 25,000 photos.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from srgan.core.config import RuntimeParams
from srgan.core.runtime import cpu_name, resolve_runtime
from srgan.data.batches import RandomCrops, Shards, batch_loader, to_float
from srgan.models.networks import Generator
from srgan.training.steps import adam, mse_step

CROP, BATCH, SCALE = 256, 8, 4


def loader_rate(shards: Path, workers: int, batches: int = 200) -> float:
    """Batches/s of the training loader over `batches` batches (after the first, which starts the workers)."""
    dataset = RandomCrops(Shards(shards), batch_size=BATCH, crop_size=CROP, scale=SCALE, seed=0)
    loader = iter(batch_loader(dataset, start=0, stop=batches + 1, workers=workers, pin_memory=False))
    next(loader)
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return batches / (time.perf_counter() - start)


def step_rate(device: str, seconds: float = 5.0) -> float:
    """Steps/s of the SRResNet update (16 blocks, 64 channels) on 64→256 batches of 8, over at
    least 3 steps and `seconds`."""
    rt = resolve_runtime(RuntimeParams(device=device))
    gen = Generator(scale=SCALE, blocks=16, channels=64).to(rt.device, memory_format=torch.channels_last).train()
    opt = adam(gen, 1e-4)
    lr_img = to_float(torch.randint(0, 256, (BATCH, 3, CROP // SCALE, CROP // SCALE), dtype=torch.uint8), rt.device)
    hr_img = to_float(torch.randint(0, 256, (BATCH, 3, CROP, CROP), dtype=torch.uint8), rt.device)
    for _ in range(3):  # warm-up: kernels, allocator, cuDNN's choice of algorithms
        mse_step(gen, opt, lr_img, hr_img, rt)
    if rt.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    steps = 0
    while steps < 3 or time.perf_counter() - start < seconds:
        for _ in range(3):  # no host sync inside a group, as between the training loop's log steps
            loss = mse_step(gen, opt, lr_img, hr_img, rt)["loss"]
        loss.item()  # waits for the device
        steps += 3
    return steps / (time.perf_counter() - start)


def write_random_shards(folder: Path, patches: int, shard_size: int = 512) -> None:
    """uint8 hr_NNNNN.npy (n, 256, 256, 3) and lr_NNNNN.npy (n, 64, 64, 3) shards, as preprocess writes them."""
    rng = np.random.default_rng(0)
    for index, first in enumerate(range(0, patches, shard_size)):
        count = min(shard_size, patches - first)
        np.save(folder / f"hr_{index:05d}.npy", rng.integers(0, 256, (count, CROP, CROP, 3), dtype=np.uint8))
        lr_side = CROP // SCALE
        np.save(folder / f"lr_{index:05d}.npy", rng.integers(0, 256, (count, lr_side, lr_side, 3), dtype=np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--patches", type=int, default=4096, help="random patches in the temporary shards")
    args = parser.parse_args()
    rt = resolve_runtime(RuntimeParams(device=args.device))
    hardware = rt.describe()["runtime.hardware"]
    print(f"{hardware} ({rt.device.type}, {rt.precision}); loader on {cpu_name()}, {os.cpu_count()} cores")
    step = step_rate(args.device)
    print(f"SRResNet update, 64→256, batch {BATCH}: {step:.2f} steps/s")
    with tempfile.TemporaryDirectory() as folder:
        write_random_shards(Path(folder), args.patches)
        workers = 1
        while workers <= (os.cpu_count() or 1):
            rate = loader_rate(Path(folder), workers)
            print(f"loader, runtime.workers={workers}: {rate:.1f} batches/s = {rate / step:.2f}× the update's rate")
            workers *= 2


if __name__ == "__main__":
    main()
