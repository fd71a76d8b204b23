"""Peak memory of `srgan upscale` on a 3000×2000 photo: 12000×8000 out, 96 MP, must stay under 3 GB.

Runs the real command in a child process on a random-weight paper-size generator (16 blocks × 64
channels, ×4) and reads the child's peak RSS from `getrusage(RUSAGE_CHILDREN)`. The output array
alone is 288 MB of uint8 RGB; the float work is bounded by the tile, not the image.

    .venv/bin/python benchmarks/upscale_memory.py [--precision auto|fp32|bf16] [--tile 256]
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from srgan.core.config import RuntimeParams
from srgan.core.runtime import cpu_name, resolve_runtime
from srgan.inference.limits import DEFAULT_TILE
from srgan.models.checkpoint import generator_config, save_generator
from srgan.models.networks import Generator

WIDTH, HEIGHT, SCALE = 3000, 2000, 4
LIMIT_MB = 3 * 1024


def synthetic_photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth random RGB image (content does not change the cost of a convolution)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        torch.manual_seed(0)
        save_generator(
            tmp / "gen.pt",
            Generator(scale=SCALE, blocks=16, channels=64).eval(),
            generator_config(SCALE, 16, 64, False),
        )
        synthetic_photo(WIDTH, HEIGHT).save(tmp / "photo.jpg", quality=90)
        command = [
            str(Path(sys.executable).parent / "srgan"),
            "upscale",
            str(tmp / "photo.jpg"),
            "-o",
            str(tmp / "photo.png"),
            "--model",
            str(tmp / "gen.pt"),
            "--device",
            "cpu",
            "--precision",
            args.precision,
            "--tile",
            str(args.tile),
        ]
        start = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - start
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: KiB
        Image.MAX_IMAGE_PIXELS = WIDTH * HEIGHT * SCALE * SCALE
        with Image.open(tmp / "photo.png") as out:
            size = out.size
    assert size == (WIDTH * SCALE, HEIGHT * SCALE), size
    megapixels = size[0] * size[1] / 1e6
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} threads, {platform.system()}; torch {torch.__version__}")
    print(
        f"srgan upscale {WIDTH}×{HEIGHT} → {size[0]}×{size[1]} ({megapixels:.0f} MP), 16 blocks × 64 channels, "
        f"tile {args.tile}, precision {args.precision} "
        f"(resolves to {resolve_runtime(RuntimeParams(device='cpu', precision=args.precision)).precision})"
    )
    print(
        f"wall {seconds:.0f} s (process start, decode, inference, PNG encode), {megapixels / seconds:.3f} output MP/s"
    )
    print(f"peak RSS {peak_mb:.0f} MB (limit {LIMIT_MB} MB): {'PASS' if peak_mb < LIMIT_MB else 'FAIL'}")


if __name__ == "__main__":
    main()
