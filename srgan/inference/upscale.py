"""`srgan upscale`: a trained generator on real photos of any size, through the tiled inference
of `srgan.inference.tiling` (bounded memory whatever the size).

Images as people have them (`read_picture`): upright by their EXIF tag; gray stays gray (the model
sees R = G = B, its output goes back to gray by BT.601 luma); an alpha channel is upscaled by
Pillow's bicubic and re-attached; 16-bit input becomes 8-bit output, round(v / 257). Reading and
writing (formats, alpha, atomic replacement) are `srgan.data.imageio`'s.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from srgan.core.errors import SrganError
from srgan.core.runtime import Runtime
from srgan.data.imageio import (
    IMAGE_EXTENSIONS,
    OUTPUT_FORMATS,
    Picture,
    check_writable,
    decode,
    decode_bytes,
    encode_png,
    is_broken_link,
    is_image,
    output_format,
    refuse_broken_link,
    to_picture,
    write_picture,
)
from srgan.inference.limits import DEFAULT_MAX_OUTPUT_PIXELS, DEFAULT_TILE, check_max_output_pixels
from srgan.inference.tiling import OutOfMemory, Tile, default_tile, upscale_image
from srgan.inference.video import (
    VIDEO_EXTENSIONS,
    VIDEO_MUXERS,
    VideoOptions,
    check_video_options,
    is_video,
    output_container,
    upscale_video,
)
from srgan.models.networks import Generator


@dataclass(frozen=True)
class Job:
    """One input file (an image or a video) and the path its upscaled version goes to."""

    source: Path
    target: Path


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
        bound_note=_bound_note(scale, max_output_pixels, "see --max-output-pixels"),
    )


def _bound_note(scale: int, max_output_pixels: int, setting: str) -> str:
    """The end of the too-many-pixels reason: the input bound as output pixels, and what sets it."""
    return f" input pixels, i.e. {max_output_pixels} output pixels at ×{scale}; {setting}"


def upscale_picture(
    gen: Generator,
    picture: Picture,
    rt: Runtime,
    *,
    tile: int | Tile,
    progress: bool = False,
    deadline: float = math.inf,
) -> Picture:
    """A picture ×s: its colour through the tiled generator (`upscale_image`), its alpha, if any,
    by Pillow's bicubic."""
    color = upscale_image(gen, picture.color, rt, tile=tile, progress=progress, deadline=deadline)
    alpha = None
    if picture.alpha is not None:
        height, width = picture.alpha.shape
        resized = Image.fromarray(picture.alpha).resize(
            (width * gen.scale, height * gen.scale), Image.Resampling.BICUBIC
        )
        alpha = np.array(resized)  # (H·s, W·s) uint8
    return Picture(color, alpha)


def upscale_file(
    gen: Generator,
    job: Job,
    rt: Runtime,
    *,
    tile: int | Tile = DEFAULT_TILE,
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
    upscaled = upscale_picture(gen, picture, rt, tile=tile, progress=progress)
    try:
        write_picture(job.target, upscaled)
    except OSError as err:  # no permission, a folder in the way, disk full
        raise SrganError(f"{job.target}: cannot write ({err.strerror or err})") from None


def upscale_encoded(
    gen: Generator,
    data: bytes,
    name: str,
    rt: Runtime,
    *,
    tile: int | Tile,
    max_output_pixels: int,
    setting: str,
    deadline: float = math.inf,
) -> bytes:
    """An encoded image (PNG, JPEG, WebP, … bytes, as uploaded) → the PNG bytes of its ×s picture,
    pixel for pixel what `upscale_file` writes to a .png (the first frame of an animation).

    Failures are `ImageReadError`s naming `name` (`TimedOut` past `deadline`); `setting` says what
    sets `max_output_pixels`."""
    picture = decode_bytes(
        data,
        name,
        max_pixels=max_output_pixels // (gen.scale * gen.scale),
        convert=to_picture,
        bound_note=_bound_note(gen.scale, max_output_pixels, setting),
    )
    return encode_png(upscale_picture(gen, picture, rt, tile=tile, deadline=deadline))


def upscale_files(
    gen: Generator,
    jobs: Sequence[Job],
    rt: Runtime,
    *,
    tile: int | None = None,
    max_output_pixels: int = DEFAULT_MAX_OUTPUT_PIXELS,
    video: VideoOptions = VideoOptions(),
    progress: bool = False,
) -> int:
    """Upscale every job, images and videos, going on past failures; print one `error:` line per
    failed file to stderr and return how many failed. On Ctrl-C, say how many files were written
    (each output is complete or absent: writes are atomic) and how far a video had got.
    A `max_output_pixels` no memory here can hold, and bad video options, are one error before any
    file is read, not one per file.

    `tile` None is `default_tile` for this device, asked once for the run; a tile halved when out
    of memory stays halved for the files after."""
    check_max_output_pixels(max_output_pixels)
    videos = any(is_video(job.source) for job in jobs)
    if videos:
        check_video_options(video)
    run_tile = Tile(default_tile(gen, rt, frames=video.batch if videos else 1) if tile is None else tile)
    failed = written = 0
    try:
        for job in tqdm(jobs, desc="files", unit="file", disable=not progress or len(jobs) == 1, file=sys.stderr):
            try:
                refuse_broken_link(job.source)  # images and videos alike
                if is_video(job.source):
                    upscale_video(gen, job.source, job.target, rt, options=video, tile=run_tile, progress=progress)
                else:
                    upscale_file(gen, job, rt, tile=run_tile, max_output_pixels=max_output_pixels, progress=progress)
                written += 1
            except SrganError as err:
                failed += 1
                named = f"{job.source}: {err}" if isinstance(err, OutOfMemory) else err  # the others name theirs
                tqdm.write(f"error: {named}", file=sys.stderr)
    except KeyboardInterrupt as err:
        within = f" ({err})" if str(err) else ""
        raise KeyboardInterrupt(f"interrupted: {written} of {len(jobs)} {noun(jobs)} written{within}") from None
    return failed


def noun(jobs: Sequence[Job]) -> str:
    """What to call the jobs in a count: "images", "videos", or "files" when they are both."""
    videos = sum(is_video(job.source) for job in jobs)
    return "videos" if videos == len(jobs) else "images" if videos == 0 else "files"


def plan_jobs(inputs: Sequence[str | os.PathLike[str]], output: str, fmt: str | None = None) -> list[Job]:
    """Pair each input image or video with its output path.

    Inputs are files or folders (a folder's images and videos by extension, not recursing). The
    output is a file when there is one input file and `output` has an extension: an image's
    .png/.jpg/.jpeg/.webp, a video's .mp4/.m4v/.mov. Otherwise it is a folder, where each file
    keeps its name: an image with the extension `fmt` (png, jpg, webp) or its own (PNG for inputs
    in other formats, such as TIFF), a video in its own container if it can be written, else .mp4.
    """
    sources: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            # A broken link is kept, to fail on its own with its name, not vanish from the count.
            found = sorted(
                p for p in item.iterdir() if (p.is_file() or is_broken_link(p)) and (is_image(p) or is_video(p))
            )
            if not found:
                raise SrganError(
                    f"{item}: no images ({', '.join(IMAGE_EXTENSIONS)}) or videos ({', '.join(VIDEO_EXTENSIONS)})"
                )
            sources += found
        else:
            sources.append(item)  # a missing file fails on its own when read
    out = Path(output)
    one_file = len(inputs) == 1 and not Path(inputs[0]).is_dir()
    if not out.is_dir() and not output.endswith(("/", os.sep)) and out.suffix:
        if not one_file:
            raise SrganError(f"{output}: several inputs need an output folder, not a file name")
        if is_video(sources[0]):
            output_container(out)
        else:
            output_format(out)
            if fmt is not None and OUTPUT_FORMATS[f".{fmt}"] != OUTPUT_FORMATS[out.suffix.lower()]:
                raise SrganError(f"{output}: the extension disagrees with --format {fmt}")
        if _same_file(sources[0], out):
            raise SrganError(f"{output}: the output would replace the input; choose another output name")
        return [Job(sources[0], out)]
    if out.exists() and not out.is_dir():
        raise SrganError(
            f"{output}: is a file, not a folder; name a new folder (or, for one input, a file with an image "
            "or video extension)"
        )
    jobs: dict[Path, Job] = {}
    for source in sources:
        if is_video(source):
            suffix = source.suffix if source.suffix.lower() in VIDEO_MUXERS else ".mp4"
        else:
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
