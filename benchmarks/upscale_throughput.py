"""Output megapixels per second of `srgan upscale` against plain fp32 eager PyTorch, and as a share
of this machine's matrix-product limit, both measured in the same run; then frames per second at
the sizes of real-time and video use.

The model is the released ×4 generator (16 blocks × 64 channels, `srgan.models.zoo`), the
default of `srgan upscale`. The job is a 512×512 photo → 2048×2048 (4.2 MP out). The reference
is what a user writes first: `gen(x)` on the whole image, fp32, NCHW, under `torch.no_grad()`,
then clamp/round to uint8. Candidates run `srgan.inference.tiling.upscale_batch`, the path of
`srgan upscale` (channels_last, `inference_mode`, tiles with their context), in fp32 and in bf16
autocast where the CPU has AVX-512 BF16 or AMX, at the default tile (256) and at 512 (one tile
here), and the same under `torch.compile` (compile time reported apart). Quality: each output's
RMS difference from the reference's, in grey levels (0–255); the bound is 0.5.

The limit: the GFLOP/s of a 2048×2048×2048 matrix product in fp32 and in bf16, measured here;
each candidate's GFLOP/s counts the generator's convolution FLOPs (`FlopCounterMode`, the
whole-image work, so tile context recomputed is overhead, not credit).

Every kind is timed `--repeats` times, interleaved, after one untimed warm-up; medians reported.
`--json` prints one line: `mp_per_s` (the fastest candidate within the quality bound),
`fp32_mp_per_s`, `ratio`, `limit_share`, and the per-kind and frames/s figures.

    .venv/bin/python benchmarks/upscale_throughput.py [--repeats 3] [--no-compile] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from srgan.core.config import RuntimeParams
from srgan.core.runtime import Runtime, cpu_name, resolve_runtime
from srgan.inference.limits import DEFAULT_TILE
from srgan.inference.tiling import upscale_batch
from srgan.models.networks import Generator
from srgan.models.zoo import DEFAULT_RELEASED, load_model

SIDE = 512  # LR side of the throughput job: 512×512 → 2048×2048
RMS_BOUND = 0.5  # grey levels
REFERENCE = "fp32 eager (reference)"
# Real-time and video sizes: (name, LR width, LR height, frames per batch).
FRAME_JOBS = (("128×128 → 512×512", 128, 128, 4), ("480p 640×480 → 2560×1920", 640, 480, 1))


def synthetic_photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """uint8 (H, W, 3): a smooth random RGB image (content does not change a convolution's cost)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    return np.array(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC))


def matmul_gflops(dtype: torch.dtype, n: int = 2048, seconds: float = 3.0) -> float:
    """This machine's matrix-product rate: the ceiling convolutions (lowered to GEMM-like kernels) approach."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def generator_gflop(gen: Generator, height: int, width: int) -> float:
    """Convolution GFLOP of one whole-image forward at (height, width); counted at 64×64, scaled by area."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        gen(torch.zeros(1, 3, 64, 64))
    return counter.get_total_flops() * (height * width) / (64 * 64) / 1e9


def reference(gen: Generator, frames: np.ndarray) -> np.ndarray:
    """Plain fp32 eager: the whole batch in one NCHW forward. uint8 (n, h, w, 3) → uint8 (n, H, W, 3)."""
    with torch.no_grad():
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255)  # (n, 3, h, w) in [0, 1]
        return gen(x).clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def tiled(gen: Generator, rt: Runtime, tile: int) -> Callable[[np.ndarray], np.ndarray]:
    """`srgan upscale`'s path for uint8 (n, h, w, 3) frames."""
    return lambda frames: upscale_batch(gen, frames, rt, tile=tile)


def candidates(gen: Generator, compiled: Generator | None) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The kinds measured: name → function of uint8 (n, h, w, 3) frames."""
    fp32 = Runtime(torch.device("cpu"), "fp32")
    auto = resolve_runtime(RuntimeParams(device="cpu", precision="auto"))
    kinds: dict[str, Callable[[np.ndarray], np.ndarray]] = {REFERENCE: lambda frames: reference(gen, frames)}
    for rt in (fp32, auto) if auto.precision != "fp32" else (fp32,):
        for tile in (DEFAULT_TILE, 2 * DEFAULT_TILE):
            kinds[f"upscale {rt.precision} tile {tile}"] = tiled(gen, rt, tile)
            if compiled is not None:
                kinds[f"upscale {rt.precision} tile {tile} +compile"] = tiled(compiled, rt, tile)
    return kinds


def timed(fn: Callable[[np.ndarray], np.ndarray], frames: np.ndarray) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    out = fn(frames)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile candidates")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    torch.set_num_threads(os.cpu_count() or 1)
    gen = load_model(DEFAULT_RELEASED).eval()
    compiled = None
    compile_s = 0.0
    photo = synthetic_photo(SIDE, SIDE)[None]  # (1, 512, 512, 3)
    if not args.no_compile:
        compiled = torch.compile(gen, dynamic=True)
        start = time.perf_counter()
        for rt_precision in ("fp32", "auto"):
            rt = resolve_runtime(RuntimeParams(device="cpu", precision=rt_precision))
            for tile in (DEFAULT_TILE, 2 * DEFAULT_TILE):
                upscale_batch(compiled, photo, rt, tile=tile)
        compile_s = time.perf_counter() - start
    limits = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}
    kinds = candidates(gen, compiled)
    gflop = generator_gflop(gen, SIDE, SIDE)
    megapixels = (SIDE * 4) ** 2 / 1e6
    outputs: dict[str, np.ndarray] = {}
    seconds: dict[str, list[float]] = {kind: [] for kind in kinds}
    for kind, fn in kinds.items():  # warm-up, and each kind's output for the quality check
        outputs[kind] = fn(photo)
    for repeat in range(args.repeats):
        for kind, fn in kinds.items():
            seconds[kind].append(timed(fn, photo)[0])
            print(f"  repeat {repeat + 1} {kind:<32} {seconds[kind][-1]:6.2f} s", file=sys.stderr)
    rows = {}
    for kind in kinds:
        s = statistics.median(seconds[kind])
        precision = "bf16" if "bf16" in kind else "fp32"
        diff = outputs[kind].astype(np.float64) - outputs[REFERENCE]
        rows[kind] = {
            "seconds": s,
            "mp_per_s": megapixels / s,
            "gflop_per_s": gflop / s,
            "limit_share": gflop / s / limits[precision],
            "rms_vs_fp32": float(np.sqrt(np.mean(diff**2))),
            "max_vs_fp32": float(np.abs(diff).max()),
        }
    ref = rows[REFERENCE]
    within = [k for k in kinds if k != REFERENCE and rows[k]["rms_vs_fp32"] <= RMS_BOUND]
    best = max(within, key=lambda k: rows[k]["mp_per_s"])
    best_fn = kinds[best]

    frame_rows = {}
    for name, width, height, batch in FRAME_JOBS:
        frames = np.stack([synthetic_photo(width, height, seed) for seed in range(batch)])
        best_fn(frames)  # warm-up at this size
        times = [timed(best_fn, frames)[0] for _ in range(args.repeats)]
        ref_time = timed(kinds[REFERENCE], frames)[0]
        frame_rows[name] = {"frames_per_s": batch / statistics.median(times), "fp32_frames_per_s": batch / ref_time}

    print(f"machine: {cpu_name()}, {torch.get_num_threads()} threads; torch {torch.__version__}; load {load:.2f}")
    print(
        f"limit: matmul {limits['fp32']:.0f} GFLOP/s fp32, {limits['bf16']:.0f} GFLOP/s bf16; generator "
        f"{DEFAULT_RELEASED}, {gflop:.0f} GFLOP for {SIDE}×{SIDE} → {4 * SIDE}×{4 * SIDE}; medians of {args.repeats}"
        + (f"; torch.compile took {compile_s:.0f} s" if compiled is not None else "")
    )
    print(f"{'kind':<33} {'out MP/s':>8} {'× fp32':>7} {'GFLOP/s':>8} {'of limit':>8} {'RMS':>6} {'max':>4}")
    for kind, row in rows.items():
        print(
            f"{kind:<33} {row['mp_per_s']:8.3f} {row['mp_per_s'] / ref['mp_per_s']:7.2f} {row['gflop_per_s']:8.0f} "
            f"{row['limit_share']:8.1%} {row['rms_vs_fp32']:6.3f} {row['max_vs_fp32']:4.0f}"
        )
    print(f"fastest within {RMS_BOUND} grey levels RMS of fp32: {best}")
    for name, row in frame_rows.items():
        print(f"  {name}: {row['frames_per_s']:.2f} frames/s ({row['fp32_frames_per_s']:.2f} fp32 eager)")
    if args.json:
        print(
            json.dumps(
                {
                    "cpu": cpu_name(),
                    "threads": torch.get_num_threads(),
                    "best": best,
                    "mp_per_s": rows[best]["mp_per_s"],
                    "fp32_mp_per_s": ref["mp_per_s"],
                    "ratio": rows[best]["mp_per_s"] / ref["mp_per_s"],
                    "limit_share": rows[best]["limit_share"],
                    "limits_gflop_per_s": limits,
                    "compile_seconds": compile_s,
                    "kinds": rows,
                    "frames": frame_rows,
                }
            )
        )


if __name__ == "__main__":
    main()
