"""`srgan upscale` of videos and the released model: clips the tests make with PyAV (frames,
timestamps, rotation, audio), Ctrl-C, memory over a long clip, bad inputs; a fresh clone's
default model and its sha256 check."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from srgan.core.errors import SrganError
from srgan.inference.tiling import context_radius, upscale_image
from srgan.inference.video import upscale_video
from srgan.models import zoo
from srgan.models.checkpoint import generator_config, save_generator
from srgan.models.zoo import load_model
from tests.test_upscale import CPU_FP32, FP32, error_lines, psnr, random_generator, smooth_image, upscale_cli

BIN = Path(sys.executable).parent


def make_clip(
    path: Path,
    frames: int = 30,
    size: tuple[int, int] = (48, 32),
    rotation: int = 0,
    audio: bool = True,
    muxer_options: dict[str, str] | None = None,
) -> None:
    """An H.264 clip at 25 frames/s (nearly lossless, CRF 10), each frame a different smooth
    field, with a 440 Hz AAC tone as long as the video and, if asked, a display rotation tag
    and the muxer's options (`{"movflags": "faststart"}`: an MP4 index at the start, as on the web)."""
    width, height = size
    rate = Fraction(25)
    with av.open(str(path), "w", options=muxer_options or {}) as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt, video.options = width, height, "yuv420p", {"crf": "10"}
        if rotation:
            video.set_display_rotation(rotation)
        sound = out.add_stream("aac", rate=16000) if audio else None
        if sound is not None:
            sound.layout = "mono"
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(smooth_image(height, width, seed=index), format="rgb24")
            frame.pts, frame.time_base = index, 1 / rate
            out.mux(video.encode(frame))
        out.mux(video.encode())
        if sound is not None:
            samples = int(16000 * frames / rate)
            tone = (np.sin(np.arange(samples) * 2 * np.pi * 440 / 16000) * 0.3).astype(np.float32)[None]
            for start in range(0, samples, 1024):
                chunk = av.AudioFrame.from_ndarray(tone[:, start : start + 1024], format="flt", layout="mono")
                chunk.sample_rate, chunk.pts, chunk.time_base = 16000, start, Fraction(1, 16000)
                out.mux(sound.encode(chunk))
            out.mux(sound.encode())


def decoded(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def audio_packets(path: Path) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as container:
        return [(p.pts, bytes(p)) for p in container.demux(audio=0) if p.dts is not None]


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "gen.pt"
    save_generator(path, random_generator(), generator_config(scale=4, blocks=2, channels=8, bicubic_skip=True))
    return path


def test_a_video_keeps_its_frames_timestamps_rotation_and_audio(tmp_path: Path, model_file: Path) -> None:
    make_clip(tmp_path / "clip.mp4", frames=30, rotation=90)
    # Lossless 4:4:4 so that a frame can be compared with `srgan upscale` of the same still.
    upscale_cli(tmp_path / "clip.mp4", "-o", tmp_path / "x4.mp4", "--model", model_file, "--crf", "0")
    upscale_cli(tmp_path / "clip.mp4", "-o", tmp_path / "x4_444.mov", "--model", model_file, "--crf", "0",
                "--pix-fmt", "yuv444p", "--batch", "3")  # fmt: skip
    source = decoded(tmp_path / "clip.mp4")
    for name, pix_fmt in (("x4.mp4", "yuv420p"), ("x4_444.mov", "yuv444p")):
        result = decoded(tmp_path / name)
        assert len(result) == len(source) == 30
        assert [float(f.time) for f in result] == [float(f.time) for f in source]  # 0.00, 0.04, … 1.16 s
        assert (result[0].width, result[0].height, result[0].format.name) == (192, 128, pix_fmt)
        assert result[0].rotation == source[0].rotation == 90
        assert audio_packets(tmp_path / name) == audio_packets(tmp_path / "clip.mp4")  # copied, not re-encoded
    with av.open(str(tmp_path / "x4.mp4")) as container:
        assert container.streams.video[0].codec_context.name == "h264"
    ours = decoded(tmp_path / "x4_444.mov")
    still = upscale_image(random_generator(), source[7].to_ndarray(format="rgb24"), CPU_FP32)
    assert psnr(ours[7].to_ndarray(format="rgb24"), still) >= 45  # measured 52.9 dB: YUV rounding only
    assert psnr(ours[8].to_ndarray(format="rgb24"), still) < 30  # the next frame differs: not a mix-up


def test_crf_reaches_the_encoder_whichever_name_it_is_given_by(tmp_path: Path, model_file: Path) -> None:
    """`--codec h264` is FFmpeg's libx264: `--crf` sets its quality as it does for `libx264`."""
    make_clip(tmp_path / "clip.mp4", frames=10, audio=False)
    sizes = {}
    for codec, crf in (("libx264", "0"), ("h264", "0"), ("h264", "45")):
        target = tmp_path / f"{codec}-{crf}.mp4"
        upscale_cli(tmp_path / "clip.mp4", "-o", target, "--model", model_file, "--codec", codec, "--crf", crf)
        sizes[codec, crf] = target.stat().st_size
    assert sizes["h264", "0"] == pytest.approx(sizes["libx264", "0"], rel=0.02), sizes
    assert sizes["h264", "0"] > 3 * sizes["h264", "45"], sizes  # lossless against CRF 45


def test_videos_and_images_in_a_folder_each_keep_their_name(tmp_path: Path, model_file: Path) -> None:
    (tmp_path / "in").mkdir()
    make_clip(tmp_path / "in" / "a.mov", frames=5, audio=False)
    make_clip(tmp_path / "in" / "b.mkv", frames=4, audio=False)
    Image.fromarray(smooth_image(10, 12)).save(tmp_path / "in" / "c.png")
    (tmp_path / "in" / "notes.txt").write_text("not a picture")
    upscale_cli(tmp_path / "in", "-o", tmp_path / "out", "--model", model_file, "--format", "webp")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.mov", "b.mp4", "c.webp"]
    assert len(decoded(tmp_path / "out" / "a.mov")) == 5 and len(decoded(tmp_path / "out" / "b.mp4")) == 4


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (lambda d: (d / "fake.mp4").write_text("no video here"), ("fake.mp4", "-o", "out.mp4"),
         "fake.mp4: not a video FFmpeg can read"),
        (lambda d: make_clip(d / "clip.mp4", frames=2), ("clip.mp4", "-o", "out.avi"),
         "out.avi: a video is written as .mp4, .m4v, .mov; choose one of those extensions"),
        (lambda d: make_clip(d / "clip.mp4", frames=2), ("clip.mp4", "-o", "out.mp4", "--codec", "h266"),
         "--codec h266: FFmpeg in PyAV has no such encoder; try libx264 (H.264)"),
        (lambda d: make_clip(d / "clip.mp4", frames=2), ("clip.mp4", "-o", "clip.mp4"),
         "clip.mp4: the output would replace the input; choose another output name"),
        (lambda d: make_clip(d / "clip.mp4", frames=2), ("clip.mp4", "-o", "out.mp4", "--pix-fmt", "bogus"),
         "--pix-fmt bogus: not a pixel format libx264 encodes; choose one of yuv420p, yuvj420p, yuv422p, "),
        (lambda d: make_clip(d / "clip.mp4", frames=2),
         ("clip.mp4", "-o", "out.mov", "--codec", "rawvideo", "--pix-fmt", "bogus"),  # lists no formats
         "--pix-fmt bogus: not a pixel format FFmpeg knows; try yuv420p"),
        (lambda d: make_clip(d / "clip.mp4", frames=2), ("clip.mp4", "-o", "out.mp4", "--codec", "libx264rgb"),
         "--pix-fmt yuv420p: not a pixel format libx264rgb encodes; choose one of bgr0, bgr24, rgb24"),
        (lambda d: make_clip(d / "clip.mp4", frames=2), ("clip.mp4", "-o", "out.mp4", "--codec", "aac"),
         "--codec aac: encodes audio, not video; try libx264 (H.264)"),
        (lambda d: [make_clip(d / "in" / name, frames=2) for name in ("a.mp4", "b.mov")],
         ("in", "-o", "out", "--codec", "aac"),  # one line for the run, not one per video
         "--codec aac: encodes audio, not video; try libx264 (H.264)"),
        (lambda d: make_clip(d / "clip.mp4", frames=2),
         ("clip.mp4", "-o", "out.mp4", "--codec", "gif", "--pix-fmt", "rgb8"),
         "out.mp4: .mp4 cannot hold gif video; choose another --codec, e.g. libx264"),
    ],
)  # fmt: skip
def test_bad_video_input_gets_one_line_and_no_output(
    tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    setup, args: tuple[str, ...], message: str,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in").mkdir()
    setup(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) as exit_info:
        upscale_cli(*args, "--model", model_file)
    assert exit_info.value.code == 2
    [line, *rest] = error_lines(capsys.readouterr().err)
    assert message in line and rest in ([], ["error: 1 of 1 videos failed"])
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no temp file left


@pytest.mark.parametrize(
    "folder",
    ["notes.txt", "/proc/srgan-test", "/sys"],  # a file in the way; a folder /proc cannot hold; one root cannot write
)
def test_a_video_into_a_folder_that_cannot_be_written_gets_the_images_one_line(
    tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], folder: str
) -> None:
    """The tests run as root, for whom a chmod 0555 folder is writable; sysfs refuses root all the same."""
    if not Path(folder).is_absolute():
        (tmp_path / folder).write_text("a file where the output folder should be\n")
    elif not Path(folder).parent.is_dir():
        pytest.skip(f"{Path(folder).parent} is not mounted here")
    monkeypatch.chdir(tmp_path)
    make_clip(tmp_path / "clip.mp4", frames=2)
    Image.fromarray(smooth_image(8, 8)).save(tmp_path / "still.png")
    lines = []
    for source, name in (("still.png", "x4.png"), ("clip.mp4", "x4.mp4")):
        with pytest.raises(SystemExit) as exit_info:
            upscale_cli(source, "-o", f"{folder}/{name}", "--model", model_file)
        assert exit_info.value.code == 2
        lines.append(error_lines(capsys.readouterr().err))
    [image_line, _], [video_line, counted] = lines
    assert image_line.startswith(f"error: {folder}/x4.png: cannot write (") and image_line.endswith(")")
    assert video_line == image_line.replace("x4.png", "x4.mp4") and counted == "error: 1 of 1 videos failed"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left


@pytest.mark.parametrize(("name", "muxer_options"), [("clip.mkv", None), ("clip.mp4", {"movflags": "faststart"})])
def test_a_truncated_video_is_refused_and_leaves_no_output(
    tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    name: str, muxer_options: dict[str, str] | None,
) -> None:  # fmt: skip
    """Cut in half (a download that stopped), both demux and decode without an error up to the cut; the
    Matroska header and the MP4 index at the front still state the whole duration, 3 s."""
    monkeypatch.chdir(tmp_path)
    make_clip(tmp_path / name, frames=75, muxer_options=muxer_options)  # 3 s; its audio is as long
    upscale_cli(name, "-o", "whole.mp4", "--model", model_file)  # whole, it is not taken for a cut one
    assert len(decoded(tmp_path / "whole.mp4")) == 75
    data = (tmp_path / name).read_bytes()
    (tmp_path / f"half_{name}").write_bytes(data[: len(data) // 2])
    with pytest.raises(SystemExit) as exit_info:
        upscale_cli(f"half_{name}", "-o", "half.mp4", "--model", model_file)
    assert exit_info.value.code == 2
    [line, counted] = error_lines(capsys.readouterr().err)
    prefix, suffix = f"error: half_{name}: read to ", " s its container states; the file is truncated or damaged"
    assert line.startswith(prefix) and line.endswith(suffix) and counted == "error: 1 of 1 videos failed"
    reached, stated = line[len(prefix) : -len(suffix)].split(" s of the ")
    assert 1.0 < float(reached) < 2.0 and stated in ("3.00", "3.06")  # 3.06: what Matroska's header states
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, f"half_{name}", "gen.pt", "whole.mp4"])


def test_a_truncated_video_that_fails_to_decode_is_refused_too(tmp_path: Path, model_file: Path) -> None:
    """An MP4 with its index at the front, cut near its start (its first twentieth, here), fails in
    the H.264 decoder (FFmpeg's "Invalid data") rather than ending early; either way, one line that
    says so and no output."""
    make_clip(tmp_path / "clip.mp4", frames=75, muxer_options={"movflags": "faststart"})
    data = (tmp_path / "clip.mp4").read_bytes()
    kinds = set()
    for twentieth in range(1, 6):
        (tmp_path / "cut.mp4").write_bytes(data[: len(data) * twentieth // 20])
        with pytest.raises(SrganError) as error:
            upscale_video(random_generator(), tmp_path / "cut.mp4", tmp_path / "x4.mp4", CPU_FP32)
        message = str(error.value)
        assert message.startswith(f"{tmp_path / 'cut.mp4'}: ") and message.endswith(
            "; the file is truncated or damaged"
        )
        kinds.add("decode" if " cannot be decoded (Invalid data found" in message else "length")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "cut.mp4", "gen.pt"]
    assert kinds == {"decode", "length"}


def srgan_upscale(*args: str | Path, cwd: Path) -> subprocess.Popen[str]:
    """The installed command in its own process group, as a shell starts a job."""
    return subprocess.Popen(
        [str(BIN / "srgan"), "upscale", *map(str, args), *FP32, "--threads", "1"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_ctrl_c_leaves_no_file_and_says_how_far_it_got(tmp_path: Path) -> None:
    make_clip(tmp_path / "long.mp4", frames=300, size=(64, 48))
    slow = tmp_path / "slow.pt"  # 8 blocks × 32 channels: a few frames a second on one thread
    save_generator(slow, random_generator(blocks=8, channels=32), generator_config(4, 8, 32, True))
    proc = srgan_upscale("long.mp4", "-o", "out.mp4", "--model", slow, "--batch", "1", cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".out.mp4.") and p.stat().st_size > 0 for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "no frame was written before the deadline"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    last = err.strip().splitlines()[-1]
    done = int(last.split("(interrupted: ")[1].split(" of ")[0])
    assert 0 < done < 300
    assert last == (
        f"interrupted: 0 of 1 videos written (interrupted: {done} of 300 frames of long.mp4 upscaled; "
        "out.mp4 not written)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4", "slow.pt"]


def peak_rss_mb(frames: int, tmp_path: Path, model_file: Path) -> float:
    """Peak RSS of a fresh process that upscales a clip of `frames` frames of 64×48 (256×192 out)."""
    make_clip(tmp_path / f"{frames}.mp4", frames=frames, size=(64, 48), audio=False)
    code = (
        "import resource, sys; from srgan.cli import main\n"
        "try: main(sys.argv[1:])\n"
        "finally: print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "upscale", f"{frames}.mp4", "-o", f"{frames}.mov", "--model", model_file, *FP32],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert len(decoded(tmp_path / f"{frames}.mov")) == frames
    return float(out.stdout.strip().splitlines()[-1])


def test_memory_stays_flat_over_a_long_clip(tmp_path: Path, model_file: Path) -> None:
    """400 frames of 256×192 output are 59 MB of pixels: kept in memory, they would show."""
    short, long = peak_rss_mb(40, tmp_path, model_file), peak_rss_mb(400, tmp_path, model_file)
    assert long - short < 20, f"peak RSS grew from {short:.0f} MB to {long:.0f} MB with the clip's length"


# --- the released model ---------------------------------------------------------------------------


def test_a_fresh_clone_upscales_with_the_released_model_and_names_it(tmp_path: Path) -> None:
    Image.fromarray(smooth_image(24, 32)).save(tmp_path / "photo.png")
    proc = srgan_upscale("photo.png", "-o", "out.png", cwd=tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert err.startswith("srgan-t91bsd200-realistic (released: SRGAN ×4, nearest upsampler, T91 + BSD200 with")
    assert "×4; 1 image to upscale" in err
    with Image.open(tmp_path / "out.png") as out:
        assert out.size == (128, 96)
        expected = upscale_image(load_model("srgan-t91bsd200-realistic"), smooth_image(24, 32), CPU_FP32)
        assert np.array_equal(np.asarray(out), expected)


@pytest.mark.parametrize("name", list(zoo.RELEASED))
def test_a_damaged_released_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    entry = zoo.RELEASED[name]
    data = bytearray((zoo.WEIGHTS_DIR / entry.file).read_bytes())
    assert zoo.released_path(name).read_bytes() == data  # the shipped file passes
    data[len(data) // 2] ^= 1  # one bit of one weight
    (tmp_path / entry.file).write_bytes(bytes(data))
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(SrganError, match=rf"sha256 .* is not the released {entry.sha256[:12]}…; the file is damaged"):
        load_model(name)
    (tmp_path / entry.file).unlink()
    with pytest.raises(SrganError, match="its file .* is missing"):
        load_model(name)


def test_the_released_srresnet_upscales_by_name(tmp_path: Path) -> None:
    Image.fromarray(smooth_image(24, 32)).save(tmp_path / "photo.png")
    proc = srgan_upscale("photo.png", "-o", "out.png", "--model", "srresnet-t91bsd200", cwd=tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert err.startswith("srresnet-t91bsd200 (released: SRResNet ×4 (pixel MSE), 16 blocks, T91 + BSD200")
    with Image.open(tmp_path / "out.png") as out:
        expected = upscale_image(load_model("srresnet-t91bsd200"), smooth_image(24, 32), CPU_FP32)
        assert np.array_equal(np.asarray(out), expected)


@pytest.mark.parametrize("name", list(zoo.RELEASED))
def test_the_released_models_are_working_generators(name: str) -> None:
    """Their weights are trained: on a smooth gradient each is close to bicubic, not noise."""
    gen = load_model(name)
    # ×4, 16 blocks; a nearest stage's conv runs after its upsample, so it needs one LR pixel less
    assert (gen.scale, context_radius(gen)) == (4, 39 if gen.upsampler == "nearest" else 40)
    ramp = np.tile(np.linspace(40, 200, 32, dtype=np.float32)[None, :, None], (32, 1, 3)).astype(np.uint8)
    with torch.inference_mode():
        out = upscale_image(gen, ramp, CPU_FP32)
    bicubic = np.asarray(Image.fromarray(ramp).resize((128, 128), Image.Resampling.BICUBIC))
    assert psnr(out[8:-8, 8:-8], bicubic[8:-8, 8:-8]) > 30
