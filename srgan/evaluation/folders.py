"""`srgan eval`'s input and output: the images of a folder a user names, read and checked (an
image that cannot be measured is named in a warning and skipped), and the one-line JSON answer.

Apart from `srgan.evaluation.evaluate` so that the evaluate stage does not depend on it: editing
what `srgan eval` reads or prints re-runs no stage.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from srgan.core.errors import SrganError
from srgan.core.metrics import Convention
from srgan.data.imageio import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image
from srgan.data.imresize import modcrop
from srgan.evaluation.evaluate import Pair, downscale
from srgan.evaluation.niqe import niqe_measures, niqe_min_size
from srgan.evaluation.scores import Scores

T = TypeVar("T")


def _user_images(folder: Path) -> list[Path]:
    """The image files of a folder a user named, or a one-line error if there are none."""
    if not folder.is_dir():
        raise SrganError(f"{folder}: not a folder of images")
    files = [folder / name for name in list_images(folder)]
    if not files:
        raise SrganError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def _too_small(path: Path, shape: tuple[int, ...], crop_border: int, factor: int = 1) -> None:
    """Refuse an image (of `shape`, before an upscaling by `factor`) smaller than every metric
    needs: NIQE's two 96-px blocks after the border crop are the largest need (SSIM needs 11 px)."""
    if niqe_measures((shape[0] * factor, shape[1] * factor), crop_border):
        return
    short, long = (-(-side // factor) for side in niqe_min_size(crop_border))
    raise ImageReadError(
        path,
        f"too small to measure ({shape[1]}×{shape[0]} px; srgan eval needs at least "
        f"{long}×{short} px, either way round)",
    )


def _measurable(folder: Path, read: Callable[[Path], T]) -> list[T]:
    """`read` each image of a user's folder; one that cannot be measured (unreadable, too small)
    is named in a warning line on stderr and skipped, so the others are still measured."""
    found, skipped = [], 0
    for path in _user_images(folder):
        try:
            found.append(read(path))
        except ImageReadError as err:
            skipped += 1
            print(f"warning: {path}: {err.reason}; skipped", file=sys.stderr)
    if not found:
        raise SrganError(f"{folder}: none of its {skipped} images can be measured (see the warnings above)")
    return found


def pairs_from_hr_folder(folder: Path, conv: Convention, max_pixels: int, degradation: str | None) -> list[Pair]:
    """Every measurable HR image of a folder, with its LR made as the convention says and degraded
    as named (for `srgan eval --degrade`: the LR the evaluate stage measures on `<set>@<degradation>`)."""
    scale = conv.crop_border

    def read(path: Path) -> Pair:
        hr_img = read_image(path, max_pixels=max_pixels, keep_gray=True)
        _too_small(path, hr_img.shape, crop_border=scale)  # the minimum is a multiple of the scale: modcrop keeps it
        hr_img = modcrop(hr_img, scale)
        return Pair(path.stem, downscale(hr_img, scale, conv, degradation, path.stem), hr_img)

    return _measurable(folder, read)


def read_folder(folder: Path, scale: int, max_pixels: int) -> list[tuple[str, np.ndarray]]:
    """Every image of a folder whose ×`scale` output NIQE measures, as (name, uint8 (H, W, 3) RGB
    or (H, W) gray), for `--no-reference`."""

    def read(path: Path) -> tuple[str, np.ndarray]:
        lr_img = read_image(path, max_pixels=max_pixels, keep_gray=True)
        _too_small(path, lr_img.shape, crop_border=scale, factor=scale)
        return path.relative_to(folder).as_posix(), lr_img

    return _measurable(folder, read)


def to_json_line(model: str, scores: Scores, degradation: str | None) -> str:
    """`srgan eval --json`: exactly one flat JSON object, every metric of the table by its name.

    Each mean is over the images with a finite value of it (an image without one, a flat image's
    NIQE or its infinite PSNR, is named in a warning on stderr), and `null` where no image has one.
    """
    fields = {"model": model, **scores.values, "images": scores.images, "convention": scores.convention}
    return json_line({**fields, "degrade": degradation})


def json_line(fields: dict[str, object]) -> str:
    """One line of strict JSON, a non-finite float (a mean no image had a value for) as `null`:
    Python's default writes Infinity and NaN, which are not JSON and which strict parsers refuse."""
    finite = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in fields.items()}
    return json.dumps(finite, allow_nan=False)
