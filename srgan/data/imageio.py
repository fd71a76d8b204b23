"""Decode images as people actually have them, into one uint8 layout; write PNGs and the upscaler's
output formats atomically.

Photo folders hold JPEGs rotated by an EXIF tag, 16-bit TIFFs, CMYK JPEGs from print workflows,
palette PNGs, images with alpha, and now and then a zero-byte, truncated or mislabelled file.
`read_image` turns every decodable one into uint8 RGB (H, W, 3) in [0, 255] (or (H, W) for
single-channel images when asked), and every other one into an `ImageReadError` whose short
`reason` the preprocess manifest lists, so one bad file is skipped instead of ending a run.
Writing: `write_png` for the pipeline's own files, and `write_picture` for `srgan upscale`'s
PNG, JPEG or WebP outputs, alpha included (`OUTPUT_FORMATS`, `check_writable`).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from srgan.core.atomic import atomic_path
from srgan.core.errors import SrganError

T = TypeVar("T")

# 8-bit-or-less single-channel modes (16-bit I;16*, 32-bit I and float F are scaled apart).
_GRAY_MODES = ("1", "L", "LA", "La")

# What Pillow raises while decoding a damaged file. Its decoders are not consistent (zlib and
# struct errors, SyntaxError for malformed chunks, ValueError/IndexError for bad tables), and a
# damaged input must be skipped, never end the run.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, TypeError, IndexError, EOFError, struct.error, zlib.error)

# Pillow's own message for a file whose data end early. Its "broken data stream" comes from
# compressed data that do not decode, which a damaged but complete file gives too: "corrupt".
_TRUNCATED_MESSAGES = ("image file is truncated", "Truncated File Read")


class ImageReadError(SrganError):
    """A file that cannot be used as an image; `reason` is the short text the manifest records.

    Reasons: "empty file", "not an image", "truncated", "corrupt", "too many pixels (W×H > bound)",
    "broken link (points to the missing file TARGET)".
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason

    def __reduce__(self) -> tuple[type[ImageReadError], tuple[Path, str]]:
        # Raised in preprocess's worker processes and re-raised in the parent, so it must
        # survive pickling; the default would call __init__ with the message alone.
        return ImageReadError, (self.path, self.reason)


def read_image(path: str | os.PathLike[str], *, max_pixels: int, keep_gray: bool = False) -> np.ndarray:
    """Decode an image file into uint8 RGB (H, W, 3) in [0, 255], upright as its EXIF tag says.

    JPEG, PNG, BMP, GIF, TIFF and WebP (the first frame of a multi-frame or animated file, in a
    folder or named alone). Conversions:
    - grayscale (1, L, I, I;16*, F) is repeated into R = G = B, or kept as (H, W) when
      `keep_gray` (evaluation measures grayscale images on their own values);
    - 16-bit values v become round(v / 257), the exact inverse of 8-bit → 16-bit (v * 257), so
      65535 → 255 and 25700 → 100; mode I is read as 16-bit data (what Pillow uses for some
      16-bit files), clipped to [0, 65535]; mode F is read on the 8-bit scale and clipped;
    - alpha (RGBA, LA, PA, P with a transparent colour) is dropped, not composited: the colour
      under it is kept, as MATLAB's `imread` and OpenCV return it, so eval images match the
      published numbers' inputs;
    - palette, CMYK (Pillow's plain conversion, ICC profiles ignored), YCbCr and others go
      through Pillow's `convert("RGB")`.

    The pixel count is checked from the header, before any pixel is decoded, against
    `max_pixels`. The file is then decoded in full, so a truncated file fails here and not in a
    later stage.
    Raises `ImageReadError` with a reason; a file that cannot be opened at all (missing,
    no permission) raises the usual `OSError`.
    """
    return decode(path, max_pixels=max_pixels, convert=lambda im: to_uint8(im, keep_gray))


def decode(
    path: str | os.PathLike[str], *, max_pixels: int, convert: Callable[[Image.Image], T], bound_note: str = ""
) -> T:
    """Open, bound-check, fully decode and EXIF-orient an image file, then `convert` the loaded image.

    `read_image` and `srgan upscale` (which keeps alpha) differ only in `convert`. `bound_note`
    is appended to the too-many-pixels reason (e.g. which option sets the bound).
    """
    path = Path(path)
    refuse_broken_link(path)
    if path.stat().st_size == 0:
        raise ImageReadError(path, "empty file")
    return _decode(path, path, max_pixels, convert, bound_note)


def decode_bytes(
    data: bytes, name: str, *, max_pixels: int, convert: Callable[[Image.Image], T], bound_note: str = ""
) -> T:
    """`decode` of an encoded image held in memory (an upload), its errors naming it `name`."""
    if not data:
        raise ImageReadError(name, "empty")
    return _decode(io.BytesIO(data), name, max_pixels, convert, bound_note)


def _decode(
    source: Path | BinaryIO,
    name: str | os.PathLike[str],
    max_pixels: int,
    convert: Callable[[Image.Image], T],
    bound_note: str,
) -> T:
    """The one place that maps Pillow's failures to `ImageReadError` reasons."""
    # `open` reads the header only. Pillow's own decompression-bomb guard, which would refuse a
    # huge header there without saying its size, is replaced by our check of the size right
    # after (and put back, so callers' later Pillow calls keep theirs).
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        im = Image.open(source)
    except UnidentifiedImageError:
        raise ImageReadError(name, "not an image") from None
    except OSError as err:
        if err.errno is not None:  # the system's: missing, no permission, a folder
            raise
        # Pillow's own, on a header that ends early or does not parse.
        raise ImageReadError(name, _reason(err)) from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    with im:
        width, height = im.size
        if width * height > max_pixels:
            raise ImageReadError(name, f"too many pixels ({width}×{height} > {max_pixels}{bound_note})")
        try:
            im.load()
            # After `load`: a PNG may store its EXIF chunk after the pixel data.
            ImageOps.exif_transpose(im, in_place=True)
            return convert(im)
        except _DECODE_ERRORS as err:
            raise ImageReadError(name, _reason(err)) from None


def _reason(err: Exception) -> str:
    """What a Pillow decoding error says of the file."""
    return "truncated" if any(message in str(err) for message in _TRUNCATED_MESSAGES) else "corrupt"


def to_uint8(im: Image.Image, keep_gray: bool) -> np.ndarray:
    """A loaded Pillow image as uint8 (H, W, 3), or (H, W) for a gray image when `keep_gray`."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        # (H, W) uint16 (any byte order) or int32 -> round(v / 257) in [0, 255].
        wide = np.clip(np.asarray(im).astype(np.int64), 0, 65535)
        gray = ((wide + 128) // 257).astype(np.uint8)
    elif mode == "F":
        gray = np.clip(np.rint(np.asarray(im)), 0, 255).astype(np.uint8)
    elif mode in _GRAY_MODES:
        gray = np.array(im.convert("L"))  # 1 -> {0, 255}; LA/La -> L drops alpha
    else:
        # P with transparency goes through RGBA: Pillow warns on a direct P -> RGB then.
        rgb = im.convert("RGBA").convert("RGB") if mode == "P" and "transparency" in im.info else im.convert("RGB")
        return np.array(rgb)  # (H, W, 3) uint8; np.array, not asarray: Pillow's buffer is read-only
    return gray if keep_gray else np.repeat(gray[:, :, None], 3, axis=2)


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write uint8 (H, W) gray or (H, W, 3) RGB as a PNG, atomically (no half-written file)."""
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"write_png expects uint8 (H, W) or (H, W, 3), got {image.dtype} {image.shape}")
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


# The files the pipeline and `srgan upscale` take for images, by extension (any case).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def is_image(path: str | os.PathLike[str]) -> bool:
    """Whether a file name has one of the image extensions: the one test of "is this an image"."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[str]:
    """Image files under `folder`, recursively, as sorted '/'-separated paths relative to it.

    Only `IMAGE_EXTENSIONS` count (any case), so download's `manifest.json` and other
    side files are not inputs; a file with an image extension that is not an image, or a broken
    link, is skipped later, with a reason.
    """
    return sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if is_image(path) and (path.is_file() or is_broken_link(path))
    )


def is_broken_link(path: Path) -> bool:
    """A symbolic link to nothing. Listed with the files, not dropped as "not a file": whoever
    reads it then says what it is (`refuse_broken_link`), instead of a file silently missing."""
    return path.is_symlink() and not path.exists()


def refuse_broken_link(path: Path) -> None:
    """Name a broken link as such; opening it would only say "No such file or directory"."""
    if is_broken_link(path):
        raise ImageReadError(path, f"broken link (points to the missing file {os.readlink(path)})")


# Output extension -> Pillow format. JPEG and WebP at quality 95: Pillow's defaults (75, 80)
# visibly smooth away the detail the generator just made. PNG at zlib level 1, not Pillow's 6:
# a 12000×8000 output (a 3000×2000 photo at ×4) encodes in 7.8 s instead of 39.8 s, 17 % larger
# (2-core AMD EPYC); the pixels are the same.
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
_SAVE_OPTIONS: dict[str, dict[str, int]] = {
    "PNG": {"compress_level": 1},
    "JPEG": {"quality": 95},
    "WEBP": {"quality": 95},
}
# The formats' own limits on a side, checked before the (long) inference rather than at save time.
_MAX_SIDE = {"PNG": 2**31 - 1, "JPEG": 65_535, "WEBP": 16_383}


@dataclass(frozen=True)
class Picture:
    """A decoded image, upright: `color` uint8 (H, W, 3) RGB or (H, W) gray, in [0, 255];
    `alpha` uint8 (H, W), 255 = opaque, or None when the file has no transparency."""

    color: np.ndarray
    alpha: np.ndarray | None
    frames: int = 1


def to_picture(im: Image.Image) -> Picture:
    """A decoded Pillow image as a `Picture` (for `decode`'s `convert`)."""
    return Picture(to_uint8(im, keep_gray=True), _alpha(im), getattr(im, "n_frames", 1))


def _alpha(im: Image.Image) -> np.ndarray | None:
    """The alpha channel as uint8 (H, W): an A band (RGBA, LA, PA) or a transparent colour (tRNS)."""
    if "A" in im.getbands():
        return np.array(im.getchannel("A"))
    if "transparency" in im.info:
        return np.array(im.convert("RGBA").getchannel("A"))
    return None


def write_picture(path: str | os.PathLike[str], picture: Picture) -> None:
    """Write a picture as PNG, JPEG or WebP by `path`'s extension, atomically (old file or new, never half).

    Gray is written as an L image (WebP, which has no gray, stores it as R = G = B).
    """
    path = Path(path)
    fmt = output_format(path)
    with atomic_path(path, suffix=path.suffix) as tmp:
        _pillow(picture).save(tmp, format=fmt, **_SAVE_OPTIONS[fmt])


def encode_png(picture: Picture) -> bytes:
    """A picture as the bytes of the PNG file `write_picture` writes."""
    buffer = io.BytesIO()
    _pillow(picture).save(buffer, format="PNG", **_SAVE_OPTIONS["PNG"])
    return buffer.getvalue()


def _pillow(picture: Picture) -> Image.Image:
    """A picture as a Pillow image: L or RGB, LA or RGBA with alpha."""
    im = Image.fromarray(picture.color)  # L or RGB
    if picture.alpha is not None:
        im.putalpha(Image.fromarray(picture.alpha))  # LA or RGBA
    return im


def output_format(path: Path) -> str:
    """The Pillow format an output path's extension asks for."""
    try:
        return OUTPUT_FORMATS[path.suffix.lower()]
    except KeyError:
        raise SrganError(
            f"{path}: cannot write {path.suffix or 'a file without extension'}; use .png, .jpg or .webp"
        ) from None


def check_writable(target: Path, shape: tuple[int, ...], alpha: bool, scale: int) -> None:
    """Refuse, before a (long) computation, what the output format cannot hold: an image of `shape`
    (H, W[, C]), with alpha or not, upscaled by `scale`."""
    fmt = output_format(target)
    if alpha and fmt == "JPEG":
        raise SrganError(f"{target}: JPEG has no alpha channel and the input has one; write .png or .webp")
    side = max(shape[:2]) * scale
    if side > _MAX_SIDE[fmt]:
        raise SrganError(
            f"{target}: {fmt} holds at most {_MAX_SIDE[fmt]} pixels a side, the output has {side}; write .png"
        )
