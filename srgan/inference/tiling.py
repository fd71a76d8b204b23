"""A generator on images of any size, in tiles, with bounded memory: the one inference path that
evaluation, `srgan upscale` (photos and video frames) and the benchmarks run.

A tile is a core of at most `tile`×`tile` LR pixels plus `context_radius(gen)` LR pixels of its
neighbours on each side (clipped at the image border, exactly where whole-image inference sees its
zero padding), so the core's output equals whole-image inference while the float work stays
bounded by the tile size. Each tile's core is written straight into a preallocated uint8 output,
the only image-sized array (3 bytes per output pixel). Several frames of one size go through as
one batch, tile by tile: one forward per tile position for all of them.

A forward that runs out of memory (the GPU's, or the CPU's where an allocation fails) starts the
batch over at half the tile, down to `MIN_TILE`, with one warning line; the result is the same
as with that smaller tile given. `srgan upscale` without `--tile` runs `default_tile`:
`DEFAULT_TILE` on the CPU, on a GPU the largest that fits half its free memory.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from srgan.core.errors import SrganError
from srgan.core.runtime import Runtime
from srgan.inference.limits import DEFAULT_TILE, MIN_TILE, tile_for_memory
from srgan.models.networks import Generator

# ITU-R BT.601 luma weights: a gray input's RGB output back to gray (the Y of `rgb_to_y`, without offset).
_LUMA = torch.tensor([0.299, 0.587, 0.114])
# Keys' cubic kernel reaches 2 input pixels each side of the sample point (F.interpolate "bicubic").
_BICUBIC_RADIUS = 2


def context_radius(gen: Generator) -> int:
    """LR pixels of context a tile needs on each side for its core to equal whole-image inference.

    The generator's receptive-field radius, walked from its output back to its input: a k×k
    convolution widens the margin by k // 2 pixels at its own resolution, and a PixelShuffle(f) or
    a nearest-neighbour Upsample(f) divides it by f, rounded up (tile cores start on LR pixel
    boundaries, so they stay aligned at every resolution). Residual and global skips read less
    than the path they skip. The bicubic skip reads 2 LR pixels each side. For ×2, ×4 and ×8 this comes to 2·blocks + 8
    (the nearest upsampler at ×4 and ×8: 2·blocks + 7, its convs sitting after their ×2).
    """
    margin = 0
    for layer in reversed([m for m in gen.modules() if isinstance(m, (nn.Conv2d, nn.PixelShuffle, nn.Upsample))]):
        if isinstance(layer, nn.PixelShuffle):
            margin = -(-margin // layer.upscale_factor)
        elif isinstance(layer, nn.Upsample):
            if layer.mode != "nearest" or not isinstance(layer.scale_factor, (int, float)):
                raise ValueError(f"context_radius expects nearest upsampling by one factor, got {layer}")
            margin = -(-margin // int(layer.scale_factor))
        else:
            if layer.stride != (1, 1):
                raise ValueError(f"context_radius expects stride-1 convolutions, got {layer}")
            margin += max(d * (k - 1) // 2 for d, k in zip(layer.dilation, layer.kernel_size))
    return max(margin, _BICUBIC_RADIUS) if gen.bicubic_skip else margin


def tile_spans(length: int, tile: int) -> list[tuple[int, int]]:
    """Split [0, length) into the fewest spans of at most `tile`, of near-equal size (no sliver)."""
    count = -(-length // tile)
    size = -(-length // count)
    return [(start, min(start + size, length)) for start in range(0, length, size)]


@dataclass
class Tile:
    """A run's tile side in LR px, shared by its calls of `upscale_batch` (a folder's images, a
    video's batches of frames): halved there when a forward runs out of memory, so that the next
    calls start at the side that fitted instead of running out, and warning, again."""

    side: int


class TimedOut(SrganError):
    """The caller's deadline passed between two tiles: a server whose client has been answered
    "timed out" stops computing an image no one will receive."""


class OutOfMemory(SrganError):
    """Out of memory even at `MIN_TILE`. Its message names no file (tiles do not know theirs):
    `srgan.inference.upscale.upscale_files` adds the one it was upscaling."""


def default_tile(gen: Generator, rt: Runtime, frames: int = 1) -> int:
    """The tile when none is given, for `frames` images a forward.

    On the CPU, `DEFAULT_TILE`. On CUDA, the largest that fits half of the device's free memory
    now (`tile_for_memory`): a big idle GPU runs big tiles, recomputing less context, and a busy
    one small tiles. Memory this process's allocator caches counts as used, so ask before the run
    allocates.
    """
    if rt.device.type != "cuda":
        return DEFAULT_TILE
    free, _total = torch.cuda.mem_get_info(rt.device)
    return tile_for_memory(
        free,
        channels=next(m for m in gen.modules() if isinstance(m, nn.Conv2d)).out_channels,  # the feature width C
        scale=gen.scale,
        context=context_radius(gen),
        element_bytes=2 if rt.precision == "bf16" else 4,
        frames=frames,
    )


def upscale_batch(
    gen: Generator,
    lr_imgs: np.ndarray,
    rt: Runtime,
    *,
    tile: int | Tile = DEFAULT_TILE,
    progress: bool = False,
    deadline: float = math.inf,
) -> np.ndarray:
    """uint8 (n, h, w, 3) RGB or (n, h, w) gray → uint8 (n, h·s, w·s[, 3]), tile by tile.

    Moves `gen` to `rt.device` in channels_last (faster convolutions on CPU and CUDA), and runs it
    in `torch.inference_mode` under `rt.autocast()` (bf16 where `rt` says). Each tile position
    is one forward of all n images. A gray image goes through the model as R = G = B and comes
    back by BT.601 luma, the RGB output and then the luma each rounded to integers. `progress`
    shows a tqdm bar of tiles on stderr.

    A forward out of memory starts the batch over at half the tile (a `Tile` keeps the halved side
    for the caller's next batches), with a warning line; at `MIN_TILE` it is an `OutOfMemory`.
    Past `deadline` (`time.monotonic()`), the next tile raises `TimedOut` instead of running.
    """
    current = tile if isinstance(tile, Tile) else Tile(tile)
    count, height, width = lr_imgs.shape[:3]
    gen = gen.to(rt.device, memory_format=torch.channels_last).eval()
    sr_imgs = np.empty((count, height * gen.scale, width * gen.scale, *lr_imgs.shape[3:]), dtype=np.uint8)
    while True:
        try:
            _fill(gen, lr_imgs, sr_imgs, rt, current.side, progress, deadline)
            return sr_imgs
        except RuntimeError as err:  # torch.OutOfMemoryError is one
            if not _out_of_memory(err):
                raise
        # Out of the `except`: the failed forward's tensors, held by the traceback, are free now.
        if rt.device.type == "cuda":
            torch.cuda.empty_cache()  # give the failed forward's cached blocks back to the driver
        current.side = _halved(current.side, rt.device, count)


def _out_of_memory(err: RuntimeError) -> bool:
    """A GPU allocation that failed, or a CPU one: PyTorch raises the latter as a plain RuntimeError."""
    return isinstance(err, torch.OutOfMemoryError) or "DefaultCPUAllocator: can't allocate memory" in str(err)


def _halved(tile: int, device: torch.device, count: int) -> int:
    """The tile to retry at after `tile` ran out of memory, said in a warning line; or, at
    `MIN_TILE`, an `OutOfMemory` saying what would free memory."""
    if tile <= MIN_TILE:
        advice = ["close other jobs on the GPU" if device.type == "cuda" else "close other programs"]
        if count > 1:
            advice.append(f"upscale fewer than {count} frames at once (--batch)")
        if device.type == "cuda":
            advice.append("run on the CPU (--device cpu)")
        raise OutOfMemory(f"out of memory on {device} even at tile {tile}, the smallest; {' or '.join(advice)}")
    smaller = max(tile // 2, MIN_TILE)
    tqdm.write(f"warning: out of memory at tile {tile} on {device}; retrying at tile {smaller}", file=sys.stderr)
    return smaller


def _fill(
    gen: Generator, lr_imgs: np.ndarray, sr_imgs: np.ndarray, rt: Runtime, tile: int, progress: bool, deadline: float
) -> None:
    """Write `upscale_batch`'s output into `sr_imgs`, one forward per tile position."""
    gray = lr_imgs.ndim == 3
    scale, context = gen.scale, context_radius(gen)
    height, width = lr_imgs.shape[1:3]
    luma = _LUMA.to(rt.device)[:, None, None]
    spans = [(ys, xs) for ys in tile_spans(height, tile) for xs in tile_spans(width, tile)]
    with torch.inference_mode():
        for (y0, y1), (x0, x1) in tqdm(
            spans, desc="tiles", unit="tile", leave=False, disable=not progress, file=sys.stderr
        ):
            if time.monotonic() > deadline:
                raise TimedOut(f"not finished within its time limit ({len(spans)} tiles of {tile} px)")
            rt.rebalance()  # another srgan process may have started or ended (runtime.threads auto)
            # The core plus its context, clipped at the image border where the model zero-pads anyway.
            cy0, cy1, cx0, cx1 = (
                max(y0 - context, 0),
                min(y1 + context, height),
                max(x0 - context, 0),
                min(x1 + context, width),
            )
            crop = torch.tensor(lr_imgs[:, cy0:cy1, cx0:cx1], device=rt.device)  # (n, th, tw[, 3]) uint8, a copy
            crop = crop[:, None].expand(-1, 3, -1, -1) if gray else crop.permute(0, 3, 1, 2)  # (n, 3, th, tw)
            lr_tile = crop.float().div(255).contiguous(memory_format=torch.channels_last)  # in [0, 1]
            with rt.autocast():
                out = gen(lr_tile)  # (n, 3, th·s, tw·s), ~[0, 1]
            core = out[:, :, (y0 - cy0) * scale : (y1 - cy0) * scale, (x0 - cx0) * scale : (x1 - cx0) * scale]
            rgb = core.float().clamp(0, 1).mul(255).round()  # (n, 3, (y1-y0)·s, (x1-x0)·s), integers 0..255
            pixels = (rgb * luma).sum(1).round() if gray else rgb.permute(0, 2, 3, 1)
            sr_imgs[:, y0 * scale : y1 * scale, x0 * scale : x1 * scale] = pixels.to(torch.uint8).cpu().numpy()


def upscale_image(
    gen: Generator,
    lr_img: np.ndarray,
    rt: Runtime,
    *,
    tile: int | Tile = DEFAULT_TILE,
    progress: bool = False,
    deadline: float = math.inf,
) -> np.ndarray:
    """uint8 (h, w, 3) RGB or (h, w) gray → uint8 (h·s, w·s[, 3]): `upscale_batch` of one image."""
    return upscale_batch(gen, lr_img[None], rt, tile=tile, progress=progress, deadline=deadline)[0]
