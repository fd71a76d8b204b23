"""Where a GAN generator's grid comes from: the periodic part of (SRGAN − SRResNet) by period.

A checkerboard from the sub-pixel convolutions (or BatchNorm) repeats every 2 or 4 output pixels
(×4 is two ×2 PixelShuffles); one printed through VGG19's pooling repeats every 2^k pixels of the
layer's depth, 16 for φ5,4 (four 2×2 pools). Folding the difference image onto a p×p tile (the
mean of all pixels with the same position modulo p) keeps exactly its period-p part; its share of
the difference's energy says how much of what the GAN phase changed is a grid of that period
(random detail folds to almost nothing: about 1 / number of tiles).

    .venv/bin/python benchmarks/grid_spectrum.py --srresnet A.pt --srgan B.pt --data DIR [--data DIR ...] [--json]

Prints, per period 2, 4, 8, 16: the share of the difference's energy (over Y, 0–255) that is
periodic with that period, beyond what the smaller periods dividing it already hold.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from srgan.core.config import PreprocessParams, RuntimeParams
from srgan.core.metrics import convention, rgb_to_y
from srgan.core.runtime import cpu_name, resolve_runtime
from srgan.evaluation.evaluate import generator_upscaler
from srgan.evaluation.folders import pairs_from_hr_folder
from srgan.models.checkpoint import load_generator

PERIODS = (2, 4, 8, 16)


def periodic_share(diff: np.ndarray, period: int) -> float:
    """Share of the energy of a 2-D array (mean removed) held by its period-`period` part."""
    diff = diff - diff.mean()
    rows, cols = diff.shape[0] // period * period, diff.shape[1] // period * period
    tiles = diff[:rows, :cols].reshape(rows // period, period, cols // period, period)
    pattern = tiles.mean(axis=(0, 2))  # (period, period): the part that repeats with this period
    energy = float(np.mean(diff[:rows, :cols] ** 2))
    return float(np.mean(pattern**2)) / energy if energy else 0.0


def shares(diffs: list[np.ndarray]) -> dict[int, float]:
    """Mean over images of each period's share beyond its divisors' (period 4 minus period 2, …)."""
    out = {}
    for period in PERIODS:
        total = np.mean([periodic_share(d, period) for d in diffs])
        below = np.mean([periodic_share(d, period // 2) for d in diffs]) if period > 2 else 0.0
        out[period] = float(total - below)
    return out


def differences(srresnet: Path, srgan: Path, folders: list[Path]) -> list[np.ndarray]:
    """Y (0–255, float) of SRGAN's output minus SRResNet's, per image of each HR folder."""
    rt = resolve_runtime(RuntimeParams())
    upscale = [generator_upscaler(load_generator(path), rt) for path in (srresnet, srgan)]
    diffs = []
    for folder in folders:
        conv = convention(4)
        for pair in pairs_from_hr_folder(folder, conv, PreprocessParams().max_pixels, None):
            outputs = [u(pair.lr_img) for u in upscale]
            y = [rgb_to_y(o, round_y=False) if o.ndim == 3 else o.astype(np.float64) for o in outputs]
            diffs.append(y[1] - y[0])
    return diffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--srresnet", type=Path, required=True)
    parser.add_argument("--srgan", type=Path, required=True)
    parser.add_argument("--data", type=Path, action="append", required=True, help="folder of HR images")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    diffs = differences(args.srresnet, args.srgan, args.data)
    result = shares(diffs)
    rms = float(np.sqrt(np.mean([np.mean((d - d.mean()) ** 2) for d in diffs])))
    if args.json:
        print(json.dumps({"images": len(diffs), "rms": rms, **{f"period_{p}": v for p, v in result.items()}}))
        return
    print(f"{len(diffs)} images; SRGAN − SRResNet RMS {rms:.2f} grey levels (Y); CPU {cpu_name()}")
    for period, share in result.items():
        print(f"  period {period:2d} px: {100 * share:5.2f} % of the difference's energy")


if __name__ == "__main__":
    main()
