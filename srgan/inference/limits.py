"""`srgan upscale`'s defaults and bounds, apart from the torch code so that the command line can
state them without importing torch (`srgan --help` starts fast)."""

import os

from srgan.core.errors import SrganError

DEFAULT_TILE = 256  # LR pixels: 16 blocks × 64 channels peak at about 1 GB in fp32 (0.5 GB in bf16)
# Below this, the context each tile recomputes (2·blocks + 8 px a side, 40 for the paper's
# model) outweighs the tile: a 32 px tile already does (32 + 80)² / 32² ≈ 12× the work.
MIN_TILE = 32
# The largest tile chosen from a GPU's free memory: the context it recomputes already adds only
# 16 % to the work ((1024 + 80)² / 1024² for the paper's model), so a bigger tile saves little.
MAX_AUTO_TILE = 1024
# `srgan upscale --tile`'s help: what the option bounds and how its default is chosen.
TILE_HELP = (
    f"tile side in input pixels, at least {MIN_TILE}; bounds memory, not the result; halved when out of memory "
    f"(default: {DEFAULT_TILE} on the CPU; on a GPU the largest power of two up to {MAX_AUTO_TILE} that fits half "
    "its free memory)"
)
DEFAULT_MAX_OUTPUT_PIXELS = 100_000_000  # a 3000×2000 photo at ×4 is 96 MP
# An output pixel while it is written: 3 bytes in the uint8 array the tiles fill, 4 in the copy
# Pillow encodes from (it keeps RGB as 4 bytes a pixel).
BYTES_PER_OUTPUT_PIXEL = 7


def max_output_pixels_ceiling() -> int:
    """The most output pixels this machine can ever hold: its physical memory at
    `BYTES_PER_OUTPUT_PIXEL`, the largest `--max-output-pixels` accepted.

    Why a ceiling: `--max-output-pixels` is what refuses an image from its header, before it is
    decoded, so a value no memory can hold lets a 1 KB file claiming 100000×100000 pixels be
    decoded until the kernel kills the process, without a word. Why physical memory, not what is
    free now: the ceiling refuses only what can never work, the same on every run of a machine; a
    value under it can still fail on a machine busy with other work. The tile's float working set
    (about 1 GB at the default tile, less with a smaller `--tile`) is left out for the same reason.
    """
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // BYTES_PER_OUTPUT_PIXEL


def check_max_output_pixels(value: int) -> None:
    """Refuse a `--max-output-pixels` over `max_output_pixels_ceiling`, in one line naming the option."""
    ceiling = max_output_pixels_ceiling()
    if value > ceiling:
        memory = ceiling * BYTES_PER_OUTPUT_PIXEL / 2**30
        raise SrganError(
            f"--max-output-pixels {value}: more output pixels than this machine's {memory:.0f} GiB of memory can "
            f"hold at {BYTES_PER_OUTPUT_PIXEL} bytes each; use at most {ceiling}"
        )


def tile_for_memory(
    free_bytes: int, *, channels: int, scale: int, context: int, element_bytes: int, frames: int = 1
) -> int:
    """The largest power-of-two tile from `MAX_AUTO_TILE` down to `MIN_TILE` whose estimated float
    working set fits half of `free_bytes`: the default tile on a GPU (`srgan.inference.tiling.default_tile`).

    The estimate, per LR pixel of a tile with its context ((tile + 2·context)² pixels, each of
    `frames` images): the generator's peak is its last ×2 stage, which holds its convolution's
    output and that output's PReLU, s²·C values each per LR pixel (4C channels at s/2 resolution,
    or C at s for an upsample-then-conv model), besides that stage's input (s²·C / 4) and the
    body's features (C): (9·s² / 4 + 1)·C values of `element_bytes` (4 in fp32, 2 under bf16
    autocast). For the paper's 16 blocks × 64 channels at ×4 that is 37·64 values a pixel, about
    1 GB at tile 256 in fp32 (`DEFAULT_TILE`). Half the free memory, not all of it: the estimate
    leaves out the convolutions' workspaces and the allocator's fragmentation, and other jobs on
    the device may grow; a tile that runs out of memory anyway is halved (`upscale_batch`).
    """
    per_pixel = (9 * scale**2 // 4 + 1) * channels * element_bytes * frames
    tile = MAX_AUTO_TILE
    while tile > MIN_TILE and (tile + 2 * context) ** 2 * per_pixel > free_bytes // 2:
        tile //= 2
    return tile
