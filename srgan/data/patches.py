"""Where patches come from: the grid of HR patch corners in an image, the seeded train/val split of
images, the seeded choice of validation patches, and cutting HR patches with their bicubic LR."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from srgan.data.imresize import imresize_uint8

Corner = tuple[int, int]  # (y, x) of a patch's top-left pixel


def patch_corners(height: int, width: int, hr_size: int, stride: int) -> list[Corner]:
    """Top-left corners of the full hr_size patches on a `stride` grid, row by row."""
    return [(y, x) for y in range(0, height - hr_size + 1, stride) for x in range(0, width - hr_size + 1, stride)]


def cut_patches(
    image: np.ndarray, corners: Sequence[Corner], hr_size: int, scale: int
) -> tuple[np.ndarray, np.ndarray]:
    """HR patches of uint8 RGB `image` (H, W, 3) and their LR versions.

    Returns hr (k, hr_size, hr_size, 3) and lr (k, hr_size/scale, hr_size/scale, 3), uint8.
    Each patch is downscaled on its own, as SR datasets made from crops are, so the LR patch
    is exactly MATLAB's `imresize(hr_patch, 1/scale)`, border handling included.
    """
    hr = np.stack([image[y : y + hr_size, x : x + hr_size] for y, x in corners])
    lr = np.stack([imresize_uint8(patch, 1 / scale) for patch in hr])
    return hr, lr


def _rank(seed: int, *parts: object) -> bytes:
    """A seeded pseudo-random sort key that depends on nothing but its arguments.

    Unlike a shared random generator it does not depend on the processing order or the numpy
    version, and one file's rank does not change when other files are added.
    """
    return hashlib.sha256("\0".join(map(str, (seed, *parts))).encode()).digest()


def split_images(names: Sequence[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, val) image names, each sorted; see the module docstring for the rule."""
    if len(names) == 1:
        return list(names), list(names) if val_fraction > 0 else []
    n_val = min(max(round(val_fraction * len(names)), 1 if val_fraction > 0 else 0), len(names) - 1)
    ranked = sorted(names, key=lambda name: _rank(seed, name))
    return sorted(ranked[n_val:]), sorted(ranked[:n_val])


def select_val_patches(
    sizes: dict[str, tuple[int, int]], *, hr_size: int, stride: int, limit: int, seed: int
) -> dict[str, list[Corner]]:
    """At most `limit` validation patches, spread over the images: {name: corners in grid order}.

    `sizes` maps each validation image to its (height, width). Patches are taken round-robin:
    one from every image (images in seeded order), then a second from every image that has
    one, and so on; which patch of an image comes first is seeded too.
    """
    candidates = []
    for name, (height, width) in sizes.items():
        corners = sorted(patch_corners(height, width, hr_size, stride), key=lambda corner: _rank(seed, name, *corner))
        candidates += [(round_, _rank(seed, name), name, corner) for round_, corner in enumerate(corners[:limit])]
    chosen: dict[str, list[Corner]] = {}
    for _, _, name, corner in sorted(candidates)[:limit]:
        chosen.setdefault(name, []).append(corner)
    return {name: sorted(chosen[name]) for name in sorted(chosen)}
