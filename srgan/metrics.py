"""MSE, PSNR and SSIM under named conventions.

Inputs everywhere: images in [0, 255] (uint8 or float), HWC with RGB channel order, or
grayscale (H, W) / (H, W, 1). Two conventions:

- "matlab" (the default; how the published numbers were made): Y of ITU-R BT.601 rounded to
  integers, as MATLAB's `rgb2ycbcr` returns for uint8 images; grayscale images measured on their
  own values; `scale` pixels cropped from each border.
- "rgb": all channels, no colour conversion, the same border crop.

Results carry the name of the convention they were measured under, so a table never mixes them.

NIQE (`niqe`) is no-reference: one image, no convention, lower is better; see its docstring.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from srgan.errors import SrganError
from srgan.imresize import imresize

_PEAK = 255.0  # L, the dynamic range of [0, 255] images
_SSIM_K1, _SSIM_K2 = 0.01, 0.03
_SSIM_WINDOW, _SSIM_SIGMA = 11, 1.5
_BT601 = np.array([65.481, 128.553, 24.966])  # Y weights for RGB in [0, 1]; offset 16


@dataclass(frozen=True)
class Convention:
    """How a pair of images is turned into the arrays that are compared.

    name: how reports refer to it. y_channel: compare BT.601 Y (grayscale inputs as they are)
    instead of all channels. round_y: round Y to integers, as MATLAB's `rgb2ycbcr` does on
    uint8 input. crop_border: pixels removed from each side before measuring (the scale).
    """

    name: str
    y_channel: bool
    round_y: bool
    crop_border: int

    def describe(self) -> str:
        """One line for reports, e.g. 'matlab: BT.601 Y rounded to integers (grayscale as is), 4 px border crop'."""
        if self.y_channel:
            channels = f"BT.601 Y {'rounded to integers' if self.round_y else 'unrounded'} (grayscale as is)"
        else:
            channels = "all channels"
        return f"{self.name}: {channels}, {self.crop_border} px border crop"


CONVENTIONS = ("matlab", "rgb")
DEFAULT_CONVENTION = "matlab"


def convention(scale: int, name: str = DEFAULT_CONVENTION) -> Convention:
    """The named convention for an upscaling factor `scale` (it sets the border crop)."""
    if name == "matlab":
        return Convention(name, y_channel=True, round_y=True, crop_border=scale)
    if name == "rgb":
        return Convention(name, y_channel=False, round_y=False, crop_border=scale)
    raise SrganError(f"unknown metric convention {name!r}; use one of {', '.join(CONVENTIONS)}")


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


def _pair(
    sr_img: np.ndarray, hr_img: np.ndarray, crop_border: int, y_channel: bool, round_y: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Both images through `_prepare`, after checking they can be compared."""
    if np.shape(sr_img) != np.shape(hr_img):
        raise SrganError(f"SR and HR images differ in shape: {np.shape(sr_img)} vs {np.shape(hr_img)}")
    sr = _prepare(sr_img, crop_border=crop_border, y_channel=y_channel, round_y=round_y)
    hr = _prepare(hr_img, crop_border=crop_border, y_channel=y_channel, round_y=round_y)
    if sr.shape[0] < 1 or sr.shape[1] < 1:
        raise SrganError(f"image of shape {np.shape(hr_img)} is empty after cropping {crop_border} px per side")
    return sr, hr


def _mse(sr: np.ndarray, hr: np.ndarray) -> float:
    return float(np.mean((sr - hr) ** 2))


def _psnr_from_mse(error: float) -> float:
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


def _ssim(sr: np.ndarray, hr: np.ndarray) -> float:
    if min(sr.shape[:2]) < _SSIM_WINDOW:
        raise SrganError(
            f"SSIM needs at least {_SSIM_WINDOW}x{_SSIM_WINDOW} px after the border crop, got {sr.shape[:2]}"
        )
    return float(np.mean([_ssim_channel(sr[:, :, c], hr[:, :, c]) for c in range(sr.shape[2])]))


def mse(sr_img: np.ndarray, hr_img: np.ndarray, *, crop_border: int, y_channel: bool, round_y: bool = True) -> float:
    """Mean squared error on the [0, 255] scale, over the cropped pixels (and channels)."""
    return _mse(*_pair(sr_img, hr_img, crop_border, y_channel, round_y))


def psnr(sr_img: np.ndarray, hr_img: np.ndarray, *, crop_border: int, y_channel: bool, round_y: bool = True) -> float:
    """PSNR in dB = 10 log10(255^2 / MSE); infinite for identical images."""
    return _psnr_from_mse(_mse(*_pair(sr_img, hr_img, crop_border, y_channel, round_y)))


def ssim(sr_img: np.ndarray, hr_img: np.ndarray, *, crop_border: int, y_channel: bool, round_y: bool = True) -> float:
    """SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, L 255.

    Filtering is 'valid' as in the reference `ssim_index.m`, so the SSIM map is 10 px smaller than
    the cropped image in each dimension and never sees padding; the result is the map's mean,
    averaged over channels when several are compared.
    """
    return _ssim(*_pair(sr_img, hr_img, crop_border, y_channel, round_y))


def measure(sr_img: np.ndarray, hr_img: np.ndarray, conv: Convention) -> Scores:
    """PSNR, SSIM and MSE of one SR image against its HR image under `conv`, and the SR image's
    NIQE (always on Y, with the convention's border crop)."""
    sr, hr = _pair(sr_img, hr_img, conv.crop_border, conv.y_channel, conv.round_y)
    error = _mse(sr, hr)
    return Scores(
        psnr=_psnr_from_mse(error),
        ssim=_ssim(sr, hr),
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


# NIQE (Mittal, Soundararajan and Bovik, "Making a completely blind image quality analyzer",
# IEEE SPL 2013), reimplemented to give the numbers of their MATLAB release (niqe_release).
# srgan/niqe_pris_params.npz holds that release's pristine model (`modelparameters.mat`:
# mu_prisparam, cov_prisparam) and its 7x7 window, as redistributed in BasicSR 1.4.2
# `basicsr/metrics/niqe_pris_params.npz` (Apache-2.0); the figures are copied unchanged.
_NIQE_PARAMS = "niqe_pris_params.npz"
_NIQE_BLOCK = 96  # block side at scale 1, as the pristine model was fitted; halved at scale 2
_NIQE_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))  # neighbours: horizontal, vertical, two diagonals
_AGGD_GRID_SIZE = 9801  # MATLAB's 0.2:0.001:10
_AGGD_CHUNK = 256  # AGGD fits per grid search, so the (fits, 9801) table stays ~20 MB
# |x - mu| at or below this (on [0, 255] values) is the rounding noise of a flat window: 0 in exact
# arithmetic, +-1e-14 after float sums, depending on their order. It matters because the AGGD fit
# counts negative and positive samples: counting the noise of a 13-px flat patch of Set14 baboon
# moves its NIQE 4e-4 away from MATLAB's 5.72957338, which is matched (to 5e-7) only with zeros there.
_FLAT_TOLERANCE = 1e-8


@dataclass(frozen=True)
class _NiqeModel:
    """The pristine multivariate Gaussian (mean (36,), covariance (36, 36)) and the 1-D window."""

    mu: np.ndarray
    cov: np.ndarray
    window: np.ndarray


@functools.cache
def _niqe_model() -> _NiqeModel:
    """Load the packaged parameters once.

    The window is MATLAB's fspecial('gaussian', 7, 7/6), an outer product g g' with sum(g) = 1,
    so its row sums are g and the filter can run separably.
    """
    with resources.as_file(resources.files("srgan") / _NIQE_PARAMS) as path, np.load(path) as data:
        window = data["gaussian_window"].astype(np.float64)
        g = window.sum(axis=1)
        if not np.allclose(np.outer(g, g), window, rtol=0, atol=1e-12):
            raise SrganError(f"{_NIQE_PARAMS}: gaussian_window is not separable; the file is not the NIQE release's")
        return _NiqeModel(
            mu=data["mu_pris_param"].astype(np.float64).reshape(-1),
            cov=data["cov_pris_param"].astype(np.float64),
            window=g,
        )


@dataclass(frozen=True)
class _AggdTable:
    """The shape-parameter grid and the gamma-function values the AGGD fit needs on it."""

    alpha: np.ndarray  # 0.2, 0.201, ..., 10
    ratio: np.ndarray  # Gamma(2/a)^2 / (Gamma(1/a) Gamma(3/a)), what the moment ratio is matched to
    gamma1: np.ndarray  # Gamma(1/a)
    gamma2: np.ndarray  # Gamma(2/a)
    gamma3: np.ndarray  # Gamma(3/a)


@functools.cache
def _aggd_table() -> _AggdTable:
    """Built once: every fit searches the same grid, and alpha is always one of its values."""
    alpha = 0.2 + 0.001 * np.arange(_AGGD_GRID_SIZE)
    gamma1, gamma2, gamma3 = (np.array([math.gamma(k / a) for a in alpha]) for k in (1.0, 2.0, 3.0))
    return _AggdTable(alpha, gamma2**2 / (gamma1 * gamma3), gamma1, gamma2, gamma3)


def _filter_replicate(image: np.ndarray, g: np.ndarray) -> np.ndarray:
    """MATLAB `imfilter(image, g * g', 'replicate')`: same size, border pixels repeated, separable."""
    padded = np.pad(image, g.size // 2, mode="edge")
    rows = sliding_window_view(padded, g.size, axis=0) @ g
    return sliding_window_view(rows, g.size, axis=1) @ g


def _mscn(image: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients, (x - mu) / (sigma + 1), as the release.

    abs() because E[x^2] - mu^2 can round below zero on flat areas; the +1 keeps flat areas finite.
    Flat windows give exactly 0 (see `_FLAT_TOLERANCE`), whatever the summation order.
    """
    mu = _filter_replicate(image, g)
    sigma = np.sqrt(np.abs(_filter_replicate(image * image, g) - mu * mu))
    deviation = image - mu
    deviation[np.abs(deviation) <= _FLAT_TOLERANCE] = 0.0
    return deviation / (sigma + 1.0)


def _blocks(image: np.ndarray, size: int) -> np.ndarray:
    """(rows * size, cols * size) -> (rows * cols, size, size) non-overlapping blocks."""
    rows, cols = image.shape[0] // size, image.shape[1] // size
    return image.reshape(rows, size, cols, size).swapaxes(1, 2).reshape(rows * cols, size, size)


def _aggd_fit(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit an asymmetric generalised Gaussian to each row of (n, k) `samples`, by moment matching.

    Returns the index of shape alpha in the `_aggd_table` grid and the left/right scales beta_l,
    beta_r, each (n,). Alpha is the grid value whose Gamma ratio is nearest the sample's (the first
    on ties, as MATLAB's `min`). A row with no negative or no positive sample (a flat block) has NaN
    scales and index 0, since MATLAB's `min` and numpy's argmin both pick the first of all-NaN.
    """
    table = _aggd_table()
    negative, positive = samples < 0, samples > 0
    squares = samples * samples
    with np.errstate(divide="ignore", invalid="ignore"):
        left_std = np.sqrt(np.sum(squares * negative, axis=1) / np.sum(negative, axis=1))
        right_std = np.sqrt(np.sum(squares * positive, axis=1) / np.sum(positive, axis=1))
        gamma_hat = left_std / right_std
        r_hat = np.mean(np.abs(samples), axis=1) ** 2 / np.mean(squares, axis=1)
        r_hat_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    index = np.concatenate(
        [
            np.argmin((table.ratio[None, :] - r_hat_norm[start : start + _AGGD_CHUNK, None]) ** 2, axis=1)
            for start in range(0, r_hat_norm.size, _AGGD_CHUNK)
        ]
    )
    scale = np.sqrt(table.gamma1[index] / table.gamma3[index])
    return index, left_std * scale, right_std * scale


def _niqe_features(mscn: np.ndarray, size: int) -> np.ndarray:
    """The release's 18 features of each `size` x `size` block of an MSCN image: (blocks, 18).

    Per block: the AGGD fit of the coefficients (alpha, mean of beta_l and beta_r), then, for each
    of the four neighbour directions, the fit of the products with the circularly shifted block
    (MATLAB `circshift` of the block, not of the image): alpha, the AGGD mean, beta_l, beta_r.
    """
    blocks = _blocks(mscn, size)
    samples = [blocks] + [blocks * np.roll(blocks, shift, axis=(1, 2)) for shift in _NIQE_SHIFTS]
    # All 5 x blocks fits in one vectorised call; row k * blocks + b is sample set k of block b.
    fits = _aggd_fit(np.stack(samples).reshape(-1, size * size))
    index, beta_l, beta_r = (v.reshape(len(samples), -1) for v in fits)
    table = _aggd_table()
    alpha = table.alpha[index]
    mean = (beta_r - beta_l) * table.gamma2[index] / table.gamma1[index]  # the AGGD's mean
    columns = [alpha[0], (beta_l[0] + beta_r[0]) / 2]
    for k in range(1, len(samples)):
        columns += [alpha[k], mean[k], beta_l[k], beta_r[k]]
    return np.stack(columns, axis=1)


def niqe_measures(shape: tuple[int, ...], crop_border: int) -> bool:
    """Whether an image of `shape` ((H, W[, C])) has the two 96x96 blocks NIQE needs after the
    border crop (one block has no covariance): at least `niqe_min_size` either way round."""
    rows, cols = ((side - 2 * crop_border) // _NIQE_BLOCK for side in shape[:2])
    return rows > 0 and cols > 0 and rows * cols >= 2


def niqe_min_size(crop_border: int) -> tuple[int, int]:
    """The short and long side of the smallest image NIQE measures: 104 x 200 px at crop 4."""
    return _NIQE_BLOCK + 2 * crop_border, 2 * _NIQE_BLOCK + 2 * crop_border


def niqe(image: np.ndarray, *, crop_border: int) -> float:
    """No-reference NIQE (Mittal et al. 2013); lower is better, about 2.5-6 for ordinary photos.

    The distance of the image's natural-scene statistics from a Gaussian model of pristine photos.
    image: (H, W, 3) RGB, or grayscale (H, W) / (H, W, 1), uint8 or float in [0, 255]. Each step
    is MATLAB's, so the published numbers are reproduced (Set14 baboon, Y, no crop: 5.72957):
    - RGB is measured on BT.601 Y rounded to integers (MATLAB `rgb2ycbcr` on uint8), as BasicSR
      does and as that reference was measured; grayscale values are used as they are.
    - `crop_border` px are removed from each side, then the image is cropped to whole 96x96 blocks
      (top-left kept), the block size of the pristine model.
    - At two scales (the second is MATLAB `imresize(img, 0.5)`, bicubic with antialiasing, not
      rounded), MSCN coefficients with the 7x7 Gaussian window and replicated borders, then 18
      features per block (48x48 blocks at scale 2): 36 per block.
    - The image's Gaussian: the features' nanmean and the covariance of the blocks without NaN;
      NIQE = sqrt((mu_p - mu)' pinv((cov_p + cov) / 2) (mu_p - mu)).

    Raises SrganError for fewer than two 96x96 blocks after the crop (one block has no
    covariance), or fewer than two blocks with any texture (flat blocks give NaN features).
    """
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 3 and array.shape[2] == 3:
        y = rgb_to_y(array, round_y=True)
    elif array.ndim == 2:
        y = array.astype(np.float64)
    else:
        raise SrganError(f"expected an (H, W), (H, W, 1) or (H, W, 3) image, got shape {np.shape(image)}")
    if crop_border < 0:
        raise SrganError(f"crop_border must be >= 0, got {crop_border}")
    if crop_border:
        y = y[crop_border:-crop_border, crop_border:-crop_border]
    rows, cols = y.shape[0] // _NIQE_BLOCK, y.shape[1] // _NIQE_BLOCK
    if not niqe_measures(array.shape, crop_border):
        cropped = f", {tuple(y.shape)} after cropping {crop_border} px per side" if crop_border else ""
        raise SrganError(
            f"NIQE needs at least two {_NIQE_BLOCK}x{_NIQE_BLOCK} blocks ({_NIQE_BLOCK}x{2 * _NIQE_BLOCK} or "
            f"{2 * _NIQE_BLOCK}x{_NIQE_BLOCK} px after the border crop); got shape {np.shape(image)}{cropped}"
        )
    model = _niqe_model()
    y = y[: rows * _NIQE_BLOCK, : cols * _NIQE_BLOCK]
    scale1 = _niqe_features(_mscn(y, model.window), _NIQE_BLOCK)
    scale2 = _niqe_features(_mscn(imresize(y, 0.5), model.window), _NIQE_BLOCK // 2)
    features = np.concatenate([scale1, scale2], axis=1)  # (blocks, 36)
    complete = features[~np.isnan(features).any(axis=1)]
    if complete.shape[0] < 2:
        raise SrganError(
            f"NIQE needs at least two textured {_NIQE_BLOCK}x{_NIQE_BLOCK} blocks, got {complete.shape[0]} of "
            f"{features.shape[0]} in an image of shape {np.shape(image)} (flat blocks have no statistics)"
        )
    diff = model.mu - np.nanmean(features, axis=0)
    cov = np.cov(complete, rowvar=False)
    return float(np.sqrt(diff @ np.linalg.pinv((model.cov + cov) / 2) @ diff))
