"""Throughput and peak memory of tiled `upscale_image` against a plain fp32 whole-image forward.

A 2000×1500 input (8000×6000 out, 48 MP). The reference is what a user would write first:
`gen(x)` on the whole image under `torch.no_grad()`, fp32, NCHW, then clamp/round to uint8. The
candidates are `srgan.inference.upscale.upscale_image` (tiles, channels_last, `inference_mode`) in fp32 and
at `--precision auto` (bf16 autocast where `runtime.resolve_runtime` says the CPU runs it fast).
Each measurement is a fresh child process, so each peak RSS is its own; reference and candidates
are interleaved, repeated, and the medians reported with ratios to the reference.

The model is a random-weight ×4 generator of 4 blocks × 8 channels: the reference holds several
(channels × 48 MP) float tensors at once, and its peak grows with the channels (measured: 9.5 GB
at 16 channels; the paper's 64 would need about 40 GB), too much for a shared 23 GB machine.
Tiling keeps the candidates' float work to one tile whatever the model.

    .venv/bin/python benchmarks/upscale_throughput.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image

from srgan.core.config import RuntimeParams
from srgan.core.runtime import cpu_name, resolve_runtime
from srgan.inference.limits import DEFAULT_TILE
from srgan.inference.upscale import upscale_image
from srgan.models.networks import Generator

WIDTH, HEIGHT, SCALE, BLOCKS, CHANNELS = 2000, 1500, 4, 4, 8
KINDS = ("reference", "tiled-fp32", "tiled-auto")


def synthetic_photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """uint8 (H, W, 3): a smooth random RGB image (content does not change the cost of a convolution)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    return np.array(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def measure(kind: str) -> dict[str, float | str]:
    """One run in this (child) process: seconds of the upscaling alone, and peak RSS."""
    torch.manual_seed(0)
    gen = Generator(scale=SCALE, blocks=BLOCKS, channels=CHANNELS).eval()
    lr_img = synthetic_photo(WIDTH, HEIGHT)  # (1500, 2000, 3) uint8
    base = peak_rss_mb()
    start = time.perf_counter()
    if kind == "reference":
        with torch.no_grad():
            x = torch.from_numpy(lr_img).permute(2, 0, 1)[None].float().div(255)  # (1, 3, h, w) in [0, 1]
            sr_img = gen(x).clamp(0, 1).mul(255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()  # (H, W, 3)
        precision = "fp32"
    else:
        rt = resolve_runtime(RuntimeParams(device="cpu", precision="fp32" if kind == "tiled-fp32" else "auto"))
        sr_img = upscale_image(gen, lr_img, rt, tile=DEFAULT_TILE)
        precision = rt.precision
    seconds = time.perf_counter() - start
    assert sr_img.shape == (HEIGHT * SCALE, WIDTH * SCALE, 3)
    return {"kind": kind, "seconds": seconds, "peak_mb": peak_rss_mb(), "base_mb": base, "precision": precision}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child)))
        return
    runs: dict[str, list[dict[str, float | str]]] = {kind: [] for kind in KINDS}
    for repeat in range(args.repeats):
        for kind in KINDS:  # interleaved: a slow spell on a shared machine hits every kind alike
            out = subprocess.run(
                [sys.executable, __file__, "--child", kind], check=True, capture_output=True, text=True
            )
            result = json.loads(out.stdout.strip().splitlines()[-1])
            runs[kind].append(result)
            print(
                f"  repeat {repeat + 1} {kind:<10} {result['seconds']:7.1f} s  peak {result['peak_mb']:6.0f} MB",
                file=sys.stderr,
            )
    megapixels = WIDTH * HEIGHT * SCALE * SCALE / 1e6
    median = {
        kind: {key: statistics.median(r[key] for r in runs[kind]) for key in ("seconds", "peak_mb", "base_mb")}
        for kind in KINDS
    }
    ref = median["reference"]
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} threads; torch {torch.__version__}")
    print(
        f"{WIDTH}×{HEIGHT} → ×{SCALE} ({megapixels:.0f} MP out), generator {BLOCKS} blocks × {CHANNELS} channels, "
        f"tile {DEFAULT_TILE}, medians of {args.repeats} interleaved runs"
    )
    print(
        f"{'kind':<11} {'precision':<9} {'out MP/s':>9} {'speed ×ref':>10} {'peak MB':>8} {'peak ×ref':>9} "
        f"{'(peak − start) MB':>18}"
    )
    for kind in KINDS:
        m = median[kind]
        print(
            f"{kind:<11} {runs[kind][0]['precision']:<9} {megapixels / m['seconds']:9.3f} "
            f"{ref['seconds'] / m['seconds']:10.2f} "
            f"{m['peak_mb']:8.0f} {m['peak_mb'] / ref['peak_mb']:9.2f} {m['peak_mb'] - m['base_mb']:18.0f}"
        )


if __name__ == "__main__":
    main()
