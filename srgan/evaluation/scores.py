"""The scores of one image, and their mean over a set: PSNR, SSIM and MSE against HR under a named
convention, and the SR image's own NIQE."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from srgan.core.errors import SrganError
from srgan.core.metrics import Convention, mean_squared, prepare_pair, psnr_from_mse, ssim_prepared
from srgan.evaluation.niqe import niqe


@dataclass(frozen=True)
class Scores:
    """PSNR (dB), SSIM and MSE (0-255 scale) against HR, and the SR image's own NIQE (lower is
    better), of one image or the mean over `images` images."""

    psnr: float
    ssim: float
    mse: float
    niqe: float
    images: int
    convention: str


def measure(sr_img: np.ndarray, hr_img: np.ndarray, conv: Convention) -> Scores:
    """PSNR, SSIM and MSE of one SR image against its HR image under `conv`, and the SR image's
    NIQE (always on Y, with the convention's border crop)."""
    sr, hr = prepare_pair(sr_img, hr_img, conv.crop_border, conv.y_channel, conv.round_y)
    error = mean_squared(sr, hr)
    return Scores(
        psnr=psnr_from_mse(error),
        ssim=ssim_prepared(sr, hr),
        mse=error,
        niqe=niqe(sr_img, crop_border=conv.crop_border),
        images=1,
        convention=conv.name,
    )


def average(results: Sequence[Scores]) -> Scores:
    """Mean of per-image PSNR, SSIM, MSE and NIQE, weighted by image count, as the papers report.

    PSNR is the mean of per-image dB values, not the PSNR of the mean MSE.
    """
    if not results:
        raise SrganError("no images to average metrics over")
    names = {result.convention for result in results}
    if len(names) != 1:
        raise SrganError(f"cannot average scores measured under different conventions: {sorted(names)}")
    weights = np.array([result.images for result in results], dtype=np.float64)

    def mean(values: list[float]) -> float:
        return float(np.sum(weights * np.array(values)) / weights.sum())

    return Scores(
        psnr=mean([result.psnr for result in results]),
        ssim=mean([result.ssim for result in results]),
        mse=mean([result.mse for result in results]),
        niqe=mean([result.niqe for result in results]),
        images=int(weights.sum()),
        convention=names.pop(),
    )
