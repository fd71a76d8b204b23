"""`srgan upscale`: a trained generator on real photos of any size, in tiles, with bounded memory.

A tile is a core of at most `tile`×`tile` LR pixels plus `context_radius(gen)` LR pixels of its
neighbours on each side (clipped at the image border, exactly where whole-image inference sees its
zero padding), so the core's output equals whole-image inference while the float work stays
bounded by the tile size. Each tile's core is written straight into a preallocated uint8 output,
the only image-sized array (3 bytes per output pixel).

Images as people have them (`read_picture`): upright by their EXIF tag; gray stays gray (the model
sees R = G = B, its output goes back to gray by BT.601 luma); an alpha channel is upscaled by
Pillow's bicubic and re-attached; 16-bit input becomes 8-bit output, round(v / 257). Reading and
writing (formats, alpha, atomic replacement) are `srgan.data.imageio`'s.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from srgan.core.errors import SrganError
from srgan.core.runtime import Runtime
from srgan.data.imageio import OUTPUT_FORMATS, Picture, check_writable, decode, output_format, to_picture, write_picture
from srgan.data.sources import IMAGE_EXTENSIONS
from srgan.inference.limits import DEFAULT_MAX_OUTPUT_PIXELS, DEFAULT_TILE
from srgan.models.checkpoint import load_generator
from srgan.models.networks import Generator

# ITU-R BT.601 luma weights: a gray input's RGB output back to gray (the Y of `rgb_to_y`, without offset).
_LUMA = torch.tensor([0.299, 0.587, 0.114])
# Keys' cubic kernel reaches 2 input pixels each side of the sample point (F.interpolate "bicubic").
_BICUBIC_RADIUS = 2


@dataclass(frozen=True)
class Job:
    """One input file and the path its upscaled image goes to."""

    source: Path
    target: Path


def is_model_uri(spec: str) -> bool:
    """`runs:/…`, `models:/…` and other `scheme:/…` MLflow URIs, as opposed to a checkpoint path."""
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]+:/", spec) is not None


def load_model(spec: str) -> Generator:
    """A generator from a checkpoint file (`srgan.models.checkpoint`) or from an MLflow model URI.

    The URI is resolved by `srgan.core.tracking`, the only module that imports mlflow, and only when
    asked for: importing mlflow costs seconds.
    """
    if not is_model_uri(spec):
        return load_generator(spec)
    from srgan.core.tracking import load_generator_from_uri

    gen = load_generator_from_uri(spec)
    if not isinstance(gen, Generator):
        raise SrganError(f"{spec}: is a {type(gen).__name__}, expected an srgan Generator")
    return gen.eval()


def context_radius(gen: Generator) -> int:
    """LR pixels of context a tile needs on each side for its core to equal whole-image inference.

    The generator's receptive-field radius, walked from its output back to its input: a k×k
    convolution widens the margin by k // 2 pixels at its own resolution, and a PixelShuffle(f)
    divides it by f, rounded up (tile cores start on LR pixel boundaries, so they stay aligned at
    every resolution). Residual and global skips read less than the path they skip. The bicubic
    skip reads 2 LR pixels each side. For ×2, ×4 and ×8 this comes to 2·blocks + 8.
    """
    margin = 0
    for layer in reversed([m for m in gen.modules() if isinstance(m, (nn.Conv2d, nn.PixelShuffle))]):
        if isinstance(layer, nn.PixelShuffle):
            margin = -(-margin // layer.upscale_factor)
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


def upscale_image(
    gen: Generator, lr_img: np.ndarray, rt: Runtime, *, tile: int = DEFAULT_TILE, progress: bool = False
) -> np.ndarray:
    """uint8 (h, w, 3) RGB or (h, w) gray → uint8 (h·s, w·s[, 3]), tile by tile.

    Moves `gen` to `rt.device` in channels_last (faster convolutions on CPU and CUDA), and runs it
    in `torch.inference_mode` under `rt.autocast()` (bf16 where `rt` says).
    A gray image goes through the model as R = G = B and comes back by BT.601 luma, the RGB output
    and then the luma each rounded to integers. `progress` shows a tqdm bar of tiles on stderr.
    Evaluation measures generators through this function too.
    """
    gray = lr_img.ndim == 2
    scale, context = gen.scale, context_radius(gen)
    height, width = lr_img.shape[:2]
    gen = gen.to(rt.device, memory_format=torch.channels_last).eval()
    sr_img = np.empty((height * scale, width * scale, *lr_img.shape[2:]), dtype=np.uint8)
    luma = _LUMA.to(rt.device)[:, None, None]
    spans = [(ys, xs) for ys in tile_spans(height, tile) for xs in tile_spans(width, tile)]
    with torch.inference_mode():
        for (y0, y1), (x0, x1) in tqdm(
            spans, desc="tiles", unit="tile", leave=False, disable=not progress, file=sys.stderr
        ):
            rt.rebalance()  # another srgan process may have started or ended (runtime.threads auto)
            # The core plus its context, clipped at the image border where the model zero-pads anyway.
            cy0, cy1, cx0, cx1 = (
                max(y0 - context, 0),
                min(y1 + context, height),
                max(x0 - context, 0),
                min(x1 + context, width),
            )
            crop = torch.tensor(lr_img[cy0:cy1, cx0:cx1], device=rt.device)  # (th, tw[, 3]) uint8, a copy
            crop = crop[None, None].expand(1, 3, -1, -1) if gray else crop.permute(2, 0, 1)[None]  # (1, 3, th, tw)
            lr_tile = crop.float().div(255).contiguous(memory_format=torch.channels_last)  # in [0, 1]
            with rt.autocast():
                out = gen(lr_tile)  # (1, 3, th·s, tw·s), ~[0, 1]
            core = out[0, :, (y0 - cy0) * scale : (y1 - cy0) * scale, (x0 - cx0) * scale : (x1 - cx0) * scale]
            rgb = core.float().clamp(0, 1).mul(255).round()  # (3, (y1-y0)·s, (x1-x0)·s), integers 0..255
            pixels = (rgb * luma).sum(0).round() if gray else rgb.permute(1, 2, 0)
            sr_img[y0 * scale : y1 * scale, x0 * scale : x1 * scale] = pixels.to(torch.uint8).cpu().numpy()
    return sr_img


def read_picture(path: str | os.PathLike[str], *, scale: int, max_output_pixels: int) -> Picture:
    """Decode an image file, keeping what `srgan.data.imageio.read_image` drops: alpha, gray, and
    the frame count of an animation (its first frame is the picture).

    Same decoding rules, reasons and errors as `read_image` (`srgan.data.imageio.decode`), with the
    bound on the output: W·s × H·s ≤ `max_output_pixels`, checked from the header before any
    pixel is decoded.
    """
    return decode(
        path,
        max_pixels=max_output_pixels // (scale * scale),
        convert=to_picture,
        bound_note=f" input pixels, i.e. {max_output_pixels} output pixels at ×{scale}; see --max-output-pixels",
    )


def upscale_file(
    gen: Generator,
    job: Job,
    rt: Runtime,
    *,
    tile: int = DEFAULT_TILE,
    max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS,
    progress: bool = False,
) -> None:
    """Read, upscale and write one image; every failure is an `SrganError` naming the file."""
    try:
        picture = read_picture(job.source, scale=gen.scale, max_output_pixels=max_output_pixels)
    except OSError as err:  # missing, unreadable, a folder
        raise SrganError(f"{job.source}: cannot read ({err.strerror or err})") from None
    check_writable(job.target, picture.color.shape, picture.alpha is not None, gen.scale)
    if picture.frames > 1:
        tqdm.write(
            f"warning: {job.source}: animated ({picture.frames} frames); only the first frame is upscaled",
            file=sys.stderr,
        )
    color = upscale_image(gen, picture.color, rt, tile=tile, progress=progress)
    alpha = None
    if picture.alpha is not None:
        height, width = picture.alpha.shape
        resized = Image.fromarray(picture.alpha).resize(
            (width * gen.scale, height * gen.scale), Image.Resampling.BICUBIC
        )
        alpha = np.array(resized)  # (H·s, W·s) uint8
    try:
        write_picture(job.target, Picture(color, alpha))
    except OSError as err:  # no permission, a folder in the way, disk full
        raise SrganError(f"{job.target}: cannot write ({err.strerror or err})") from None


def upscale_files(
    gen: Generator,
    jobs: Sequence[Job],
    rt: Runtime,
    *,
    tile: int = DEFAULT_TILE,
    max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS,
    progress: bool = False,
) -> int:
    """Upscale every job, going on past failures; print one `error:` line per failed file to
    stderr and return how many failed. On Ctrl-C, say how many were written (each output is
    complete or absent: writes are atomic)."""
    failed = written = 0
    try:
        for job in tqdm(jobs, desc="images", unit="image", disable=not progress, file=sys.stderr):
            try:
                upscale_file(gen, job, rt, tile=tile, max_output_pixels=max_output_pixels, progress=progress)
                written += 1
            except SrganError as err:
                failed += 1
                tqdm.write(f"error: {err}", file=sys.stderr)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"interrupted: {written} of {len(jobs)} images written") from None
    return failed


def plan_jobs(inputs: Sequence[str | os.PathLike[str]], output: str, fmt: str | None = None) -> list[Job]:
    """Pair each input image with its output path.

    Inputs are files or folders (a folder's images by extension, not recursing). The output is a
    file when there is one input file and `output` ends in .png/.jpg/.jpeg/.webp; otherwise a
    folder, where each image keeps its name, with the extension `fmt` (png, jpg, webp) or its
    own (PNG for inputs in other formats, such as TIFF).
    """
    sources: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            images = sorted(p for p in item.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not images:
                raise SrganError(f"{item}: no images ({', '.join(IMAGE_EXTENSIONS)})")
            sources += images
        else:
            sources.append(item)  # a missing file fails on its own when read
    out = Path(output)
    one_file = len(inputs) == 1 and not Path(inputs[0]).is_dir()
    if not out.is_dir() and not output.endswith(("/", os.sep)) and out.suffix:
        if not one_file:
            raise SrganError(f"{output}: several inputs need an output folder, not a file name")
        output_format(out)
        if fmt is not None and OUTPUT_FORMATS[f".{fmt}"] != OUTPUT_FORMATS[out.suffix.lower()]:
            raise SrganError(f"{output}: the extension disagrees with --format {fmt}")
        if _same_file(sources[0], out):
            raise SrganError(f"{output}: the output would replace the input; choose another output name")
        return [Job(sources[0], out)]
    jobs: dict[Path, Job] = {}
    for source in sources:
        suffix = f".{fmt}" if fmt else (source.suffix if source.suffix.lower() in OUTPUT_FORMATS else ".png")
        target = out / f"{source.stem}{suffix}"
        if target in jobs:
            raise SrganError(
                f"{source}: its output {target} is also {jobs[target].source}'s; upscale them into separate folders"
            )
        if _same_file(source, target):
            raise SrganError(f"{source}: the output would replace the input; choose another output folder or --format")
        jobs[target] = Job(source, target)
    return list(jobs.values())


def _same_file(source: Path, target: Path) -> bool:
    """Whether writing `target` would replace `source`: the same path, or a link to it."""
    if target.exists() and source.exists():
        return os.path.samefile(source, target)
    return target.resolve() == source.resolve()
