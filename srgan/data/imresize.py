"""MATLAB-compatible bicubic `imresize`, in numpy.

The published super-resolution baselines were made with MATLAB's
`imresize(img, scale, 'bicubic')`: Keys cubic kernel with a = -0.5, the kernel stretched by
1/scale when downscaling (antialiasing), symmetric padding that repeats the border pixel
(`[a b c]` -> `b a | a b c | c b`), height resized before width, and, for uint8 input, each pass
rounded half away from zero and saturated to uint8 before the next one. This module reproduces
that, so LR images and the bicubic baseline match the literature numbers.

Why our own and not a library: the libraries tried either round differently between the two
passes or pad differently, so their LR pixels are not MATLAB's (docs/architecture.md, "Why our
own imresize", has the measurements).
"""

from __future__ import annotations

import math

import numpy as np

from srgan.core.errors import SrganError

_KERNEL_WIDTH = 4.0  # support of the Keys cubic kernel, in input pixels at scale 1


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB's `cubic`), support [-2, 2]."""
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * (
        (ax > 1) & (ax <= 2)
    )


def _contributions(in_len: int, out_len: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Weights and 0-based source indices, both (out_len, taps), as MATLAB's `contributions`.

    Output pixel i (1-based) sits at input coordinate u = i/scale + (1 - 1/scale)/2 (pixel
    centres aligned). Downscaling stretches the kernel to 4/scale input pixels, so every input
    pixel contributes (antialiasing). Out-of-range taps are mirrored with the edge pixel
    repeated (MATLAB's symmetric padding), and taps whose weight is zero for every output
    are dropped, as MATLAB does.
    """
    antialias = scale < 1
    kernel_width = _KERNEL_WIDTH / scale if antialias else _KERNEL_WIDTH
    u = np.arange(1, out_len + 1, dtype=np.float64) / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(taps)[None, :]  # 1-based, may fall outside [1, in_len]
    distance = u[:, None] - indices
    weights = scale * _cubic(distance * scale) if antialias else _cubic(distance)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len - 1, -1, -1)])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_len)]
    used = np.any(weights != 0, axis=0)
    return weights[:, used], indices[:, used]


def _resize_axis(image: np.ndarray, axis: int, scale: float, out_len: int) -> np.ndarray:
    """Resize float64 `image` (H, W[, C]) along `axis` (0 or 1) to `out_len`; other axes unchanged."""
    weights, indices = _contributions(image.shape[axis], out_len, scale)
    shape = [1] * image.ndim
    shape[axis] = out_len  # broadcasts one tap's weights along the other axes
    out = np.zeros(image.shape[:axis] + (out_len,) + image.shape[axis + 1 :], dtype=np.float64)
    # One tap at a time, in MATLAB's summation order, keeps memory at one output-sized array
    # (a 2000x1500 RGB /4 has 18 taps); `np.take` gathers along the axis without transposing.
    for tap in range(weights.shape[1]):
        out += weights[:, tap].reshape(shape) * np.take(image, indices[:, tap], axis=axis)
    return out


def _round_uint8(image: np.ndarray) -> np.ndarray:
    """Saturate to [0, 255] and round half away from zero, as MATLAB's cast to uint8.

    `x - floor(x)` is exact in float64, so halves are detected without the `x + 0.5` rounding
    error that `np.floor(x + 0.5)` has just below one half.
    """
    clipped = np.clip(image, 0.0, 255.0)
    floor = np.floor(clipped)
    return (floor + (clipped - floor >= 0.5)).astype(np.uint8)


def _output_shape(image: np.ndarray, scale: float) -> tuple[int, int]:
    """MATLAB's output size for a scale: (ceil(H * scale), ceil(W * scale))."""
    if image.ndim not in (2, 3):
        raise SrganError(f"imresize expects an (H, W) or (H, W, C) image, got shape {image.shape}")
    if not scale > 0:
        raise SrganError(f"imresize scale must be positive, got {scale}")
    return math.ceil(image.shape[0] * scale), math.ceil(image.shape[1] * scale)


def imresize(image: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB `imresize(image, scale, 'bicubic')` on float values, without rounding.

    image: (H, W) or (H, W, C), any real dtype, any value range (e.g. [0, 255]).
    Returns float64 (ceil(H*scale), ceil(W*scale)[, C]) in the same range; bicubic overshoot
    can leave it slightly, as in MATLAB. Height is resized first, then width.
    """
    array = np.asarray(image, dtype=np.float64)
    out_h, out_w = _output_shape(array, scale)
    return _resize_axis(_resize_axis(array, 0, scale, out_h), 1, scale, out_w)


def imresize_uint8(image: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB `imresize(image, scale, 'bicubic')` on a uint8 image: what MATLAB returns.

    image: uint8 (H, W) or (H, W, C) in [0, 255]. Returns uint8 (ceil(H*scale),
    ceil(W*scale)[, C]). MATLAB keeps the uint8 class between its height and width passes, so
    the intermediate result is rounded and saturated too; rounding only at the end would change
    many pixels by a grey level, and more next to hard edges, whose overshoot MATLAB clips
    between the passes.
    """
    if image.dtype != np.uint8:
        raise SrganError(f"imresize_uint8 expects a uint8 image, got {image.dtype}; use imresize for floats")
    out_h, out_w = _output_shape(image, scale)
    resized = _round_uint8(_resize_axis(image.astype(np.float64), 0, scale, out_h))
    return _round_uint8(_resize_axis(resized.astype(np.float64), 1, scale, out_w))


def imresize_rounded_once(image: np.ndarray, scale: float) -> np.ndarray:
    """The same resize on a uint8 image in float, saturated and rounded (half to even) once at the
    end: BasicSR's Python `imresize` followed by its `round()` and uint8 cast. Up to a grey level
    away from `imresize_uint8` near edges; BasicSR's published bicubic figures are made this way."""
    if image.dtype != np.uint8:
        raise SrganError(f"imresize_rounded_once expects a uint8 image, got {image.dtype}")
    return np.clip(np.round(imresize(image.astype(np.float64), scale)), 0, 255).astype(np.uint8)


def bicubic_upscale(lr_img: np.ndarray, scale: int, *, in_float: bool = False) -> np.ndarray:
    """The bicubic baseline: uint8 (h, w[, C]) -> uint8 (h*scale, w*scale[, C]), MATLAB-rounded
    after each pass, or with `in_float` rounded once (`imresize_rounded_once`)."""
    return imresize_rounded_once(lr_img, scale) if in_float else imresize_uint8(lr_img, scale)


def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop (H, W[, C]) to (H - H % scale, W - W % scale[, C]), keeping the top-left corner."""
    height, width = image.shape[:2]
    return image[: height - height % scale, : width - width % scale]
