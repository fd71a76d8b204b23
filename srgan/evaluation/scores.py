"""The one table of metrics, and the scores of one image and their mean over a set.

Every output that shows a metric (metrics.json, scores.csv, results.md, the perception–distortion
figure, MLflow, `srgan eval` text and `--json`) is generated from `METRICS`: adding a metric is
adding one row. Distortion metrics (MSE, PSNR, SSIM) compare the SR image with HR under a named
convention; LPIPS compares them as a learned network sees them; NIQE judges the SR image alone,
so HR gets a NIQE too, the value a perfect result would have.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from srgan.core.errors import SrganError
from srgan.core.metrics import Convention, mean_squared, prepare_pair, psnr_from_mse, ssim_prepared
from srgan.evaluation.niqe import FlatImageError, niqe
from srgan.models.lpips import lpips


@dataclass(frozen=True)
class Measured:
    """One SR image and its HR image (uint8 (H, W, 3) RGB or (H, W) gray) under a convention; the
    prepared pair is made once for all the distortion metrics."""

    sr_img: np.ndarray
    hr_img: np.ndarray
    conv: Convention

    @cached_property
    def prepared(self) -> tuple[np.ndarray, np.ndarray]:
        c = self.conv
        return prepare_pair(self.sr_img, self.hr_img, c.crop_border, c.y_channel, c.round_y)


@dataclass(frozen=True)
class Metric:
    """One metric: its key in every file, its label in tables, which way is better, how many
    decimals tables show, whether it is perceptual (the side SRGAN should win), whether it needs
    the HR image (a no-reference metric is also reported for HR itself), and why an image can lack a
    finite value of it (the warning that names such an image; empty if every image has one)."""

    name: str
    label: str
    higher_is_better: bool
    decimals: int
    perceptual: bool
    reference: bool
    compute: Callable[[Measured], float]
    unmeasurable: str = ""

    @property
    def heading(self) -> str:
        """The label with its direction, e.g. 'PSNR (dB) ↑' or 'LPIPS ↓'."""
        return f"{self.label} {'↑' if self.higher_is_better else '↓'}"

    def format(self, value: float) -> str:
        """The value to the metric's decimals; "n/a" for a mean no image had a finite value for."""
        return f"{value:.{self.decimals}f}" if math.isfinite(value) else "n/a"


def _niqe(m: Measured) -> float:
    """NaN for an image too flat for NIQE's statistics: `average` leaves it out of the mean and
    `unmeasured` names it, while its other metrics count."""
    try:
        return niqe(m.sr_img, crop_border=m.conv.crop_border)
    except FlatImageError:
        return math.nan


def _psnr(m: Measured) -> float:
    """Infinite for an output equal to HR (MSE 0; a flat image upscales exactly): true of the image,
    but no mean can hold it, so `average` leaves it out of the PSNR mean and `unmeasured` names it."""
    return psnr_from_mse(mean_squared(*m.prepared))


METRICS: tuple[Metric, ...] = (
    Metric("mse", "MSE", False, 2, False, True, lambda m: mean_squared(*m.prepared)),
    Metric("psnr", "PSNR (dB)", True, 2, False, True, _psnr, "PSNR infinite (the output equals HR exactly)"),
    Metric("ssim", "SSIM", True, 4, False, True, lambda m: ssim_prepared(*m.prepared)),
    Metric("lpips", "LPIPS", False, 4, True, True, lambda m: lpips(m.sr_img, m.hr_img, crop_border=m.conv.crop_border)),
    Metric("niqe", "NIQE", False, 2, True, False, _niqe, "too flat for NIQE (fewer than two textured 96×96 blocks)"),
)
METRIC_NAMES = tuple(metric.name for metric in METRICS)
NO_REFERENCE = tuple(metric for metric in METRICS if not metric.reference)
PERCEPTUAL = tuple(metric for metric in METRICS if metric.perceptual)


@dataclass(frozen=True)
class Scores:
    """Every metric of `METRICS` (by name) for one image, or the mean over `images` images."""

    values: dict[str, float]
    images: int
    convention: str

    def __getitem__(self, name: str) -> float:
        return self.values[name]


def measure(sr_img: np.ndarray, hr_img: np.ndarray, conv: Convention) -> Scores:
    """Every metric of one SR image against its HR image under `conv` (NIQE and LPIPS with the
    convention's border crop)."""
    measured = Measured(sr_img, hr_img, conv)
    return Scores({metric.name: metric.compute(measured) for metric in METRICS}, 1, conv.name)


def no_reference(image: np.ndarray, crop_border: int) -> dict[str, float]:
    """The no-reference metrics of one image alone (an HR image, or an upscaled photo without HR)."""
    measured = Measured(image, image, Convention("none", y_channel=False, round_y=False, crop_border=crop_border))
    return {metric.name: metric.compute(measured) for metric in NO_REFERENCE}


def average(results: Sequence[Scores]) -> Scores:
    """Mean of each per-image metric, weighted by image count, as the papers report.

    PSNR is the mean of per-image dB values, not the PSNR of the mean MSE. A metric an image has
    no finite value for (NIQE of a flat image: NaN; PSNR of an exact output: infinite) is averaged
    over the other images, as `unmeasured` warns; NaN if no image has one.
    """
    if not results:
        raise SrganError("no images to average metrics over")
    names = {result.convention for result in results}
    if len(names) != 1:
        raise SrganError(f"cannot average scores measured under different conventions: {sorted(names)}")
    weights = np.array([result.images for result in results], dtype=np.float64)
    values = {}
    for key in results[0].values:
        column = np.array([result[key] for result in results])
        known = np.isfinite(column)
        values[key] = float(np.sum(weights[known] * column[known]) / weights[known].sum()) if known.any() else math.nan
    return Scores(values, int(weights.sum()), names.pop())


def unmeasured(values: dict[str, float]) -> list[Metric]:
    """The metrics an image's scores have no finite value for (left out of their means)."""
    return [metric for metric in METRICS if metric.name in values and not math.isfinite(values[metric.name])]
