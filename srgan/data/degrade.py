"""Degradations of an LR image after its bicubic downscale: the named ones an eval set can carry
(`data.eval: [bsd100@jpeg50]`, `srgan eval --degrade jpeg50`), and the seeded random chain that
`preprocess.degradation: realistic` makes training pairs with (`--degrade realistic` applies it
to a folder).

Every function takes and returns uint8 RGB (h, w, 3) or gray (h, w) in [0, 255], and is a pure
function of its arguments: the random ones draw from a generator seeded by a key string (the seed
and the patch, or the image's name), so the prepared data is the same bytes on every run.

Names: `jpeg<Q>` (Pillow's JPEG at quality Q, 4:2:0), `noise<S>` (Gaussian noise of standard
deviation S grey levels, drawn per channel), `crf<C>` (one H.264 frame from libx264 at CRF C,
yuv420p, as a phone video's frame), `realistic` (the training chain, `realistic`).
"""

from __future__ import annotations

import hashlib
import io
import re
from fractions import Fraction

import numpy as np
from PIL import Image

from srgan.core.errors import SrganError

REALISTIC = "realistic"
_NAMED = re.compile(r"^(jpeg|noise|crf)(\d+)$")
_LIMITS = {"jpeg": (1, 95), "noise": (1, 50), "crf": (0, 51)}
FORMS = "jpeg<1-95>, noise<1-50>, crf<0-51> or realistic"


def check_degradation(name: str, key: str) -> None:
    """Refuse a degradation name this module cannot apply, naming the key it came from."""
    if name == REALISTIC:
        return
    match = _NAMED.match(name)
    if match is None:
        raise SrganError(f"{key}: {name!r} is not a degradation: {FORMS}")
    low, high = _LIMITS[match[1]]
    if not low <= int(match[2]) <= high:
        raise SrganError(f"{key}: {name!r}: {match[1]} takes {low}-{high}")


def degrade(lr_img: np.ndarray, name: str, key: str) -> np.ndarray:
    """`lr_img` degraded as `name` says (checked by `check_degradation`); `key` seeds the random
    draws: the same key and image give the same bytes."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little"))
    if name == REALISTIC:
        return realistic(lr_img, rng)
    kind, value = _NAMED.match(name).groups()  # type: ignore[union-attr]
    if kind == "jpeg":
        return jpeg(lr_img, int(value))
    if kind == "noise":
        return gaussian_noise(lr_img, float(value), rng, gray=False)
    return h264_frame(lr_img, int(value))


def realistic(lr_img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The training chain, in the spirit of BSRGAN / Real-ESRGAN but sized to the degradations
    photos and videos carry (by measurement: docs/results.md): each step on its own draw,
    1. blur (p 0.25): Gaussian, σ U(0.3, 0.8) LR px. On the LR after the fixed bicubic ×1/scale
       rather than on the HR before it: a Gaussian before the downscale is close to one of σ/scale
       after it, at 1/scale² of the cost.
    2. noise (p 0.4): Gaussian, σ U(1, 10) grey levels, the same on every channel 30 % of the time
       (a sensor's luma noise), per channel otherwise.
    3. compression (p 0.6): JPEG at quality 30-95 (two times in three) or an H.264 frame at CRF
       20-36.
    About one patch in six comes out clean, so clean input stays what the model knows best."""
    out = lr_img
    if rng.random() < 0.25:
        out = gaussian_blur(out, rng.uniform(0.3, 0.8))
    if rng.random() < 0.4:
        out = gaussian_noise(out, rng.uniform(1.0, 10.0), rng, gray=rng.random() < 0.3)
    if rng.random() < 0.6:
        out = (
            jpeg(out, int(rng.integers(30, 96))) if rng.random() < 2 / 3 else h264_frame(out, int(rng.integers(20, 37)))
        )
    return out


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur, edges mirrored, rounded back to uint8."""
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    out = image.astype(np.float64)
    for axis in (0, 1):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in range(out.ndim)], mode="symmetric")
        length = out.shape[axis]
        out = sum(w * np.take(padded, range(i, i + length), axis=axis) for i, w in enumerate(taps))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def gaussian_noise(image: np.ndarray, sigma: float, rng: np.random.Generator, *, gray: bool) -> np.ndarray:
    """Add N(0, σ²) grey levels, one draw per pixel (`gray`) or per pixel and channel; clip, round."""
    shape = image.shape[:2] + (1,) * (image.ndim - 2) if gray else image.shape
    noisy = image + rng.normal(0.0, sigma, size=shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode as JPEG (Pillow, libjpeg-turbo, 4:2:0 chroma for RGB)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    decoded = np.asarray(Image.open(buffer))
    return decoded.reshape(image.shape)


def h264_frame(image: np.ndarray, crf: int) -> np.ndarray:
    """Encode as a one-frame H.264 video (libx264, yuv420p, one thread: deterministic) and decode it.

    yuv420p needs even sides, so an odd side is padded by its edge for the codec and cropped back;
    gray goes through as RGB and comes back as the channels' mean."""
    import av  # PyAV, loaded only where a frame is encoded

    height, width = image.shape[:2]
    rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
    rgb = np.pad(rgb, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height = rgb.shape[1], rgb.shape[0]
    encoder.pix_fmt = "yuv420p"
    encoder.time_base = Fraction(1, 25)
    encoder.options = {"crf": str(crf), "threads": "1"}
    packets = [
        *encoder.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")),
        *encoder.encode(None),
    ]
    decoder = av.CodecContext.create("h264", "r")
    frames = [frame for packet in packets for frame in decoder.decode(packet)] + list(decoder.decode(None))
    out = frames[0].to_ndarray(format="rgb24")[:height, :width]
    if image.ndim == 2:
        return np.rint(out.mean(axis=2)).astype(np.uint8)
    return out
