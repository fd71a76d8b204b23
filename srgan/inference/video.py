"""`srgan upscale` of a video file: decode → tiles → encode as one stream, with PyAV (its wheels
bundle FFmpeg), so memory holds a batch of frames whatever the length of the clip.

Kept from the input: every frame's timestamp (so the frame rate, variable or not), the display
rotation tag (the pixels are upscaled as stored and the tag is copied, as players expect), and
the first audio stream, copied packet by packet, never re-encoded. Frames are upscaled in
batches of `batch` (`srgan.inference.tiling.upscale_batch`: one forward per tile position for all
of them), as uint8 RGB (FFmpeg converts from and to the codec's YUV). The output is encoded
with `codec` (H.264 by default) at `crf` in `pix_fmt`, into a temporary file renamed onto the
target when the last frame is written: Ctrl-C or an error leaves no half file. The options are
checked before any frame is decoded, and an input that ends before the duration its container
states (a download or copy cut short) is refused rather than upscaled into a fragment.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm import tqdm

from srgan.core.atomic import atomic_path
from srgan.core.errors import SrganError
from srgan.core.runtime import Runtime
from srgan.inference.limits import DEFAULT_TILE
from srgan.inference.tiling import Tile, upscale_batch
from srgan.models.networks import Generator

# Containers the output can be written in, by extension (FFmpeg's muxer names): the ISO ones,
# whose edit lists keep the first frame at its timestamp despite the encoder's B-frame delay
# (Matroska shifts every timestamp by that delay, 64 ms for H.264). Inputs may be anything FFmpeg
# reads; VIDEO_EXTENSIONS are the extensions a folder is searched for.
VIDEO_MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov"}
VIDEO_EXTENSIONS = (*VIDEO_MUXERS, ".mkv", ".avi", ".webm")
# Encoders whose quality is set by a constant rate factor.
_CRF_CODECS = ("libx264", "libx265")


@dataclass(frozen=True)
class VideoOptions:
    """How the output video is encoded, and how many frames go through the model at once."""

    codec: str = "libx264"
    crf: int = 18
    pix_fmt: str = "yuv420p"
    batch: int = 4


def is_video(path: Path) -> bool:
    """A video by its extension (how a folder's files are sorted into images and videos)."""
    return path.suffix.lower() in VIDEO_EXTENSIONS


def output_container(target: Path) -> str:
    """The muxer for `target`'s extension, or an error naming the ones that work."""
    muxer = VIDEO_MUXERS.get(target.suffix.lower())
    if muxer is None:
        raise SrganError(f"{target}: a video is written as {', '.join(VIDEO_MUXERS)}; choose one of those extensions")
    return muxer


def upscale_video(
    gen: Generator,
    source: Path,
    target: Path,
    rt: Runtime,
    *,
    options: VideoOptions = VideoOptions(),
    tile: int | Tile = DEFAULT_TILE,
    progress: bool = False,
) -> int:
    """Upscale every frame of `source` into `target`; return the number of frames written.

    A `KeyboardInterrupt` comes back with how many frames were done and that `target` was not
    written; every failure FFmpeg reports is an `SrganError` naming the file.
    """
    import av  # PyAV loads FFmpeg's libraries: only when a video is upscaled

    muxer = output_container(target)
    _check_container(av, check_video_options(options), muxer, target)
    try:
        source_file = av.open(str(source))
    except (av.FFmpegError, OSError) as err:
        raise SrganError(f"{source}: not a video FFmpeg can read ({_reason(err)})") from None
    done = 0
    with source_file:
        if not source_file.streams.video:
            raise SrganError(f"{source}: holds no video stream")
        video_in = source_file.streams.video[0]
        video_in.thread_type = "AUTO"
        audio_in = source_file.streams.audio[0] if source_file.streams.audio else None
        total = video_in.frames or None
        bar = tqdm(total=total, desc=source.name, unit="frame", disable=not progress, file=sys.stderr)
        try:
            with atomic_path(target, suffix=target.suffix) as tmp, av.open(str(tmp), "w", format=muxer) as sink:
                writer = _Writer(av, sink, options, video_in, audio_in)
                pending: list = []  # decoded frames waiting for a full batch
                reached = 0.0  # the latest end time of a packet read, in seconds
                for packet in source_file.demux():  # every stream, so that the longest one counts in `reached`
                    reached = max(reached, _end(packet))
                    if packet.stream is audio_in:
                        writer.audio(packet)
                    if packet.stream is not video_in:
                        continue
                    for frame in _decode(av, packet, source):
                        pending.append(frame)
                        if len(pending) == options.batch:
                            done += writer.frames(pending, upscale_batch(gen, _rgb(pending), rt, tile=tile))
                            bar.update(len(pending))
                            pending = []
                if pending:
                    done += writer.frames(pending, upscale_batch(gen, _rgb(pending), rt, tile=tile))
                    bar.update(len(pending))
                if done == 0:
                    raise SrganError(f"{source}: no video frame could be decoded")
                _check_length(av, source_file, source, reached, writer.rate)
                writer.close()
        except KeyboardInterrupt:
            raise KeyboardInterrupt(
                f"interrupted: {done} of {total or '?'} frames of {source} upscaled; {target} not written"
            ) from None
        except av.FFmpegError as err:
            raise SrganError(f"{target}: FFmpeg could not write it ({_reason(err)})") from None
        except OSError as err:  # the temporary file: no permission, a file where a folder should be
            raise SrganError(f"{target}: cannot write ({err.strerror or err})") from None
        finally:
            bar.close()
    return done


class _Writer:
    """The output container, its streams made from the first video frame (its size and rotation):
    audio packets that arrive earlier wait until then."""

    def __init__(self, av, sink, options: VideoOptions, video_in, audio_in) -> None:
        self.av, self.sink, self.options = av, sink, options
        self.video_in, self.audio_in = video_in, audio_in
        self.video_out = self.audio_out = None
        self.rate = video_in.average_rate or video_in.guessed_rate or Fraction(25)
        self.waiting: list = []  # audio packets before the first video frame

    def audio(self, packet) -> None:
        if packet.dts is None:  # the demuxer's flush packet
            return
        if self.video_out is None:
            self.waiting.append(packet)
            return
        packet.stream = self.audio_out
        self.sink.mux(packet)

    def frames(self, sources: list, upscaled: np.ndarray) -> int:
        """Encode `upscaled` (n, H·s, W·s, 3) uint8 RGB with the timestamps of `sources`."""
        if self.video_out is None:
            self._open(sources[0], upscaled.shape[2], upscaled.shape[1])
        for source, pixels in zip(sources, upscaled):
            frame = self.av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = source.pts, source.time_base
            self.sink.mux(self.video_out.encode(frame))
        return len(sources)

    def close(self) -> None:
        self.sink.mux(self.video_out.encode())  # flush the encoder's delayed frames

    def _open(self, first, width: int, height: int) -> None:
        stream = self.sink.add_stream(self.options.codec, rate=self.rate)
        stream.width, stream.height, stream.pix_fmt = width, height, self.options.pix_fmt
        stream.time_base = self.video_in.time_base
        if stream.codec_context.name in _CRF_CODECS:  # the encoder, whichever name --codec gave it by
            stream.options = {"crf": str(self.options.crf)}
        if first.rotation:
            stream.set_display_rotation(first.rotation)
        self.video_out = stream
        if self.audio_in is not None:
            self.audio_out = self.sink.add_stream_from_template(self.audio_in)
        for packet in self.waiting:
            self.audio(packet)
        self.waiting = []


def _decode(av, packet, source: Path) -> Iterator:
    try:
        yield from packet.decode()
    except av.FFmpegError as err:
        at = f" at {float(packet.pts * packet.time_base):.2f} s" if packet.pts is not None else ""
        raise SrganError(
            f"{source}: a frame{at} cannot be decoded ({_reason(err)}); the file is truncated or damaged"
        ) from None


def _end(packet) -> float:
    """Where `packet` ends, in seconds (0 for the demuxer's flush packets, which have no time)."""
    if packet.pts is None or packet.time_base is None:
        return 0.0
    return float((packet.pts + (packet.duration or 0)) * packet.time_base)


def _check_length(av, container, source: Path, reached: float, rate: Fraction) -> None:
    """Refuse an input whose packets end before the duration its container states.

    A file cut short (a download or copy that stopped) mostly demuxes and decodes without an error
    up to the cut, so nothing else would tell that the output is a fragment of the clip. `reached`
    counts every stream, so a video track shorter than the audio is no reason; the tolerance, two
    frames or 5 %, covers the last packet's unstated duration and the container's rounding.
    """
    if container.duration is None:  # nothing stated (a raw H.264 stream): nothing to compare
        return
    stated = container.duration / av.time_base
    ends = reached - (container.start_time or 0) / av.time_base
    if ends < stated - max(2 / rate, 0.05 * stated):
        raise SrganError(
            f"{source}: read to {ends:.2f} s of the {stated:.2f} s its container states; "
            "the file is truncated or damaged"
        )


def _rgb(frames: list) -> np.ndarray:
    """Decoded frames → uint8 (n, h, w, 3) RGB, each at the first frame's size."""
    first = frames[0]
    return np.stack([f.reformat(first.width, first.height, "rgb24").to_ndarray() for f in frames])


def check_video_options(options: VideoOptions) -> str:
    """Refuse a --codec that is not a video encoder and a --pix-fmt it cannot encode, before a frame
    is decoded or a file made; return the encoder's name (`--codec h264` is libx264).

    Unchecked, they fail at the first frame with PyAV's or FFmpeg's bare words ("not a pixel
    format", "audio stream `rate` must be", "Invalid argument").
    """
    import av

    try:
        codec = av.codec.Codec(options.codec, "w")
    except (av.codec.codec.UnknownCodecError, av.FFmpegError):
        raise SrganError(f"--codec {options.codec}: FFmpeg in PyAV has no such encoder; try libx264 (H.264)") from None
    if codec.type != "video":
        raise SrganError(f"--codec {options.codec}: encodes {codec.type}, not video; try libx264 (H.264)")
    formats = [f.name for f in codec.video_formats or ()]  # empty when the encoder does not list them
    if formats and options.pix_fmt not in formats:
        raise SrganError(
            f"--pix-fmt {options.pix_fmt}: not a pixel format {codec.name} encodes; choose one of {', '.join(formats)}"
        )
    try:
        av.VideoFormat(options.pix_fmt)
    except ValueError:
        raise SrganError(f"--pix-fmt {options.pix_fmt}: not a pixel format FFmpeg knows; try yuv420p") from None
    return codec.name


def _check_container(av, encoder: str, muxer: str, target: Path) -> None:
    """Refuse an encoder the output container cannot hold (a GIF stream in .mp4), asked of FFmpeg
    through a container in memory, so that no file is made."""
    with av.open(io.BytesIO(), "w", format=muxer) as probe:
        supported = probe.supported_codecs
    if encoder not in supported:
        raise SrganError(f"{target}: {target.suffix} cannot hold {encoder} video; choose another --codec, e.g. libx264")


def _reason(err: Exception) -> str:
    return getattr(err, "strerror", None) or str(err).splitlines()[0]
