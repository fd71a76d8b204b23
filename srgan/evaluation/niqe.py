"""NIQE (Mittal, Soundararajan and Bovik, "Making a completely blind image quality analyzer", IEEE
SPL 2013): no reference, one image, lower is better; the numbers of their MATLAB release."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from importlib import resources

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from srgan.core.errors import SrganError
from srgan.core.metrics import rgb_to_y
from srgan.data.imresize import imresize

# NIQE (Mittal, Soundararajan and Bovik, "Making a completely blind image quality analyzer",
# IEEE SPL 2013), reimplemented to give the numbers of their MATLAB release (niqe_release).
# srgan/evaluation/niqe_pris_params.npz holds that release's pristine model (`modelparameters.mat`:
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
# The least spread (standard deviation of its Y values, grey levels) of a block NIQE's statistics
# describe: the 8-bit quantisation step, and the constant C = 1 of the MSCN denominator sigma + C.
# A block spread less holds a couple of adjacent grey values (a constant plus rounding or noise): its
# local sigma is below C too, so (x - mu) / (sigma + C) is that noise over ~C, not a normalised
# contrast, and the AGGD fits of such near-two-valued samples end at the grid's ends (NIQE ~700). A
# smooth gradient spreads more: its low local contrast is blur, which NIQE is meant to score.
_TEXTURE_STD = 1.0


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
    with resources.as_file(resources.files(__package__) / _NIQE_PARAMS) as path, np.load(path) as data:
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
    covariance), and FlatImageError for fewer than two textured ones: a flat block has NaN features,
    a near-flat one (standard deviation under 1 grey level, `_TEXTURE_STD`: grey 127.5 plus noise
    scored 717) features of noise. That guard only refuses: an image it passes is measured on all
    its blocks as the release measures it, so a photo's near-flat blocks (a sky) count as before.
    """
    y = _cropped_luma(image, crop_border)
    rows, cols = y.shape[0] // _NIQE_BLOCK, y.shape[1] // _NIQE_BLOCK
    if not niqe_measures(np.shape(image), crop_border):
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
    known = ~np.isnan(features).any(axis=1)
    textured = np.count_nonzero(known & (_blocks(y, _NIQE_BLOCK).std(axis=(1, 2)) >= _TEXTURE_STD))
    if textured < 2:
        raise FlatImageError(
            f"NIQE needs at least two textured {_NIQE_BLOCK}x{_NIQE_BLOCK} blocks, got {textured} of "
            f"{features.shape[0]} in an image of shape {np.shape(image)} (a block is textured if its values "
            f"have a standard deviation of at least {_TEXTURE_STD:g} grey level; flatter ones have no statistics)"
        )
    complete = features[known]
    diff = model.mu - np.nanmean(features, axis=0)
    cov = np.cov(complete, rowvar=False)
    return float(np.sqrt(diff @ np.linalg.pinv((model.cov + cov) / 2) @ diff))


class FlatImageError(SrganError):
    """An image with too little texture for NIQE's statistics: its other metrics still count."""


def _cropped_luma(image: np.ndarray, crop_border: int) -> np.ndarray:
    """float64 (H', W'): rounded BT.601 Y of an RGB image (a gray one's own values), border cropped."""
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
    return y
