"""MSE, PSNR and SSIM under named conventions.

Inputs everywhere: images in [0, 255] (uint8 or float), HWC with RGB channel order, or
grayscale (H, W) / (H, W, 1). Three conventions:

- "matlab" (the default; how the published numbers were made): Y of ITU-R BT.601 rounded to
  integers, as MATLAB's `rgb2ycbcr` returns for uint8 images; grayscale images measured on their
  own values; `scale` pixels cropped from each border.
- "rgb": all channels, no colour conversion, the same border crop.
- "basicsr": BasicSR's (many recent papers): Y unrounded, the same border crop; an HR folder's LR
  and bicubic images resized in float and rounded once.

Results carry the name of the convention they were measured under, so a table never mixes them.

NIQE, no-reference, is in `srgan.evaluation.niqe`; `srgan.evaluation.scores` combines them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from srgan.core.config import CONVENTION_FIELDS, CONVENTIONS, DEFAULT_CONVENTION
from srgan.core.errors import SrganError

_PEAK = 255.0  # L, the dynamic range of [0, 255] images
_SSIM_K1, _SSIM_K2 = 0.01, 0.03
_SSIM_WINDOW, _SSIM_SIGMA = 11, 1.5
_BT601 = np.array([65.481, 128.553, 24.966])  # Y weights for RGB in [0, 1]; offset 16


@dataclass(frozen=True)
class Convention:
    """How a pair of images is turned into the arrays that are compared, and how the LR inputs
    and the bicubic baseline of an HR folder are made.

    name: how reports refer to it. y_channel: compare BT.601 Y (grayscale inputs as they are)
    instead of all channels. round_y: round Y to integers, as MATLAB's `rgb2ycbcr` does on
    uint8 input. crop_border: pixels removed from each side before measuring (the scale).
    resize_in_float: bicubic resizing in float, rounded to uint8 once at the end (BasicSR's
    Python `imresize`), instead of MATLAB's uint8 `imresize`, which rounds after each pass.
    """

    name: str
    y_channel: bool
    round_y: bool
    crop_border: int
    resize_in_float: bool = False

    def describe(self) -> str:
        """One line for reports, e.g. 'matlab: BT.601 Y rounded to integers (grayscale as is), 4 px border crop'."""
        if self.y_channel:
            channels = f"BT.601 Y {'rounded to integers' if self.round_y else 'unrounded'} (grayscale as is)"
        else:
            channels = "all channels"
        resize = "; LR and bicubic resized in float, rounded once" if self.resize_in_float else ""
        return f"{self.name}: {channels}, {self.crop_border} px border crop{resize}"


def convention(scale: int, name: str = DEFAULT_CONVENTION) -> Convention:
    """The named convention for an upscaling factor `scale` (it sets the border crop)."""
    if name not in CONVENTION_FIELDS:
        raise SrganError(f"unknown metric convention {name!r}; use one of {', '.join(CONVENTIONS)}")
    return Convention(name, crop_border=scale, **CONVENTION_FIELDS[name])


def rgb_to_y(image: np.ndarray, *, round_y: bool) -> np.ndarray:
    """BT.601 luma: (H, W, 3) RGB in [0, 255] -> float64 (H, W) Y in [16, 235].

    Y = 16 + (65.481 R + 128.553 G + 24.966 B) with R, G, B in [0, 1]. With `round_y`, Y is
    rounded half away from zero, as MATLAB's `rgb2ycbcr` returns it for uint8 images.
    """
    y = 16.0 + np.asarray(image, dtype=np.float64) @ (_BT601 / 255.0)
    if not round_y:
        return y
    floor = np.floor(y)  # Y >= 16 > 0, so rounding half up is rounding half away from zero
    return floor + (y - floor >= 0.5)


def _prepare(image: np.ndarray, *, crop_border: int, y_channel: bool, round_y: bool) -> np.ndarray:
    """(H, W[, C]) in [0, 255] -> float64 (H', W', C') with the border cropped.

    C' is 1 on the Y channel or for grayscale input, else C. Cropping after the colour
    conversion is the same as before it, since the conversion is per pixel.
    """
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        raise SrganError(f"expected an (H, W), (H, W, 1) or (H, W, 3) image, got shape {array.shape}")
    if y_channel and array.shape[2] == 3:
        array = rgb_to_y(array, round_y=round_y)[:, :, None]
    array = array.astype(np.float64)
    if crop_border < 0:
        raise SrganError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border:
        array = array[crop_border:-crop_border, crop_border:-crop_border]
    return array


def prepare_pair(
    sr_img: np.ndarray, hr_img: np.ndarray, crop_border: int, y_channel: bool, round_y: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Both images through `_prepare`, after checking they can be compared: float64 (H', W', C')
    arrays on which `mean_squared` and `ssim_prepared` measure several scores from one preparation."""
    if np.shape(sr_img) != np.shape(hr_img):
        raise SrganError(f"SR and HR images differ in shape: {np.shape(sr_img)} vs {np.shape(hr_img)}")
    sr = _prepare(sr_img, crop_border=crop_border, y_channel=y_channel, round_y=round_y)
    hr = _prepare(hr_img, crop_border=crop_border, y_channel=y_channel, round_y=round_y)
    if sr.shape[0] < 1 or sr.shape[1] < 1:
        raise SrganError(f"image of shape {np.shape(hr_img)} is empty after cropping {crop_border} px per side")
    return sr, hr


def mean_squared(sr: np.ndarray, hr: np.ndarray) -> float:
    """MSE of a prepared pair."""
    return float(np.mean((sr - hr) ** 2))


def psnr_from_mse(error: float) -> float:
    """PSNR in dB of an MSE on the [0, 255] scale."""
    return math.inf if error == 0 else 10.0 * math.log10(_PEAK**2 / error)


def _gaussian_window() -> np.ndarray:
    """The 1-D factor of MATLAB's `fspecial('gaussian', 11, 1.5)`; its outer product is that window."""
    x = np.arange(_SSIM_WINDOW) - (_SSIM_WINDOW - 1) / 2
    g = np.exp(-(x**2) / (2 * _SSIM_SIGMA**2))
    return g / g.sum()


def _filter_valid(image: np.ndarray, g: np.ndarray) -> np.ndarray:
    """MATLAB `filter2(g' * g, image, 'valid')`: (H, W) -> (H - 10, W - 10), done separably."""
    rows = sliding_window_view(image, g.size, axis=0) @ g  # (H - 10, W)
    return sliding_window_view(rows, g.size, axis=1) @ g  # (H - 10, W - 10)


def _ssim_channel(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al.'s `ssim_index.m` on one float64 (H, W) channel in [0, 255]: mean of the SSIM map."""
    g = _gaussian_window()
    c1 = (_SSIM_K1 * _PEAK) ** 2
    c2 = (_SSIM_K2 * _PEAK) ** 2
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    var_x = _filter_valid(x * x, g) - mu_x**2
    var_y = _filter_valid(y * y, g) - mu_y**2
    cov = _filter_valid(x * y, g) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


def ssim_prepared(sr: np.ndarray, hr: np.ndarray) -> float:
    """SSIM of a prepared pair (see `ssim`)."""
    if min(sr.shape[:2]) < _SSIM_WINDOW:
        raise SrganError(
            f"SSIM needs at least {_SSIM_WINDOW}x{_SSIM_WINDOW} px after the border crop, got {sr.shape[:2]}"
        )
    return float(np.mean([_ssim_channel(sr[:, :, c], hr[:, :, c]) for c in range(sr.shape[2])]))


def mse(sr_img: np.ndarray, hr_img: np.ndarray, *, crop_border: int, y_channel: bool, round_y: bool = True) -> float:
    """Mean squared error on the [0, 255] scale, over the cropped pixels (and channels)."""
    return mean_squared(*prepare_pair(sr_img, hr_img, crop_border, y_channel, round_y))


def psnr(sr_img: np.ndarray, hr_img: np.ndarray, *, crop_border: int, y_channel: bool, round_y: bool = True) -> float:
    """PSNR in dB = 10 log10(255^2 / MSE); infinite for identical images."""
    return psnr_from_mse(mean_squared(*prepare_pair(sr_img, hr_img, crop_border, y_channel, round_y)))


def ssim(sr_img: np.ndarray, hr_img: np.ndarray, *, crop_border: int, y_channel: bool, round_y: bool = True) -> float:
    """SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, L 255.

    Filtering is 'valid' as in the reference `ssim_index.m`, so the SSIM map is 10 px smaller than
    the cropped image in each dimension and never sees padding; the result is the map's mean,
    averaged over channels when several are compared.
    """
    return ssim_prepared(*prepare_pair(sr_img, hr_img, crop_border, y_channel, round_y))
