"""`srgan upscale`: tiles that equal whole-image inference, images as people have them, bad inputs."""

from __future__ import annotations

import contextlib
import io
import math
import os
import pty
import re
import resource
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import srgan.inference.tiling
from srgan.cli import main
from srgan.core.errors import SrganError
from srgan.core.runtime import Runtime
from srgan.evaluation.evaluate import generator_upscaler
from srgan.inference.limits import DEFAULT_TILE, MAX_AUTO_TILE, MIN_TILE, max_output_pixels_ceiling, tile_for_memory
from srgan.inference.tiling import (
    OutOfMemory,
    context_radius,
    default_tile,
    tile_spans,
    upscale_batch,
    upscale_image,
)
from srgan.inference.upscale import Job, plan_jobs, read_picture, upscale_files
from srgan.models.checkpoint import generator_config, save_discriminator, save_generator
from srgan.models.networks import Discriminator, Generator
from srgan.models.zoo import is_model_uri

BIN = Path(sys.executable).parent
CPU_FP32 = Runtime(torch.device("cpu"), "fp32")
FP32 = ["--device", "cpu", "--precision", "fp32"]


def random_generator(
    scale: int = 4,
    blocks: int = 2,
    channels: int = 8,
    bicubic_skip: bool = True,
    seed: int = 0,
    upsampler: str = "pixelshuffle",
) -> Generator:
    """Random weights in eval mode, with BN statistics that are not the identity and the output
    centred in [0, 1], so a tiling mistake shows in the pixels instead of vanishing into clamping."""
    torch.manual_seed(seed)
    gen = Generator(scale=scale, blocks=blocks, channels=channels, bicubic_skip=bicubic_skip, upsampler=upsampler)
    with torch.no_grad():
        for module in gen.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
        if not bicubic_skip:
            gen.tail.bias += 0.5
    return gen.eval()


def smooth_image(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """uint8 (H, W, C) (or (H, W) for C = 0): a photo-like smooth random field, deterministic."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((height // 8 + 2, width // 8 + 2, max(channels, 1)))
    img = (
        np.kron(coarse, np.ones((8, 8, 1)))[:height, :width] * 200 + rng.random((height, width, max(channels, 1))) * 55
    )
    img = img.astype(np.uint8)
    return img[:, :, 0] if channels == 0 else img


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    gen = random_generator()
    path = tmp_path / "gen.pt"
    save_generator(path, gen, generator_config(scale=4, blocks=2, channels=8, bicubic_skip=True))
    return path


def upscale_cli(*args: str | Path) -> None:
    main(["upscale", *map(str, args), *FP32])


def error_lines(stderr: str) -> list[str]:
    """The `error:` lines, without mlflow's log lines that may share stderr."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# --- tiling ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("upsampler", ["pixelshuffle", "nearest"])
@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("blocks", [0, 2])
def test_context_radius_is_the_measured_receptive_field(scale: int, blocks: int, upsampler: str) -> None:
    """The output of one LR pixel depends on inputs exactly `context_radius` pixels away, no further."""
    gen = random_generator(scale=scale, blocks=blocks, channels=4, upsampler=upsampler).double()
    radius = context_radius(gen)
    side = 2 * radius + 9
    centre = side // 2
    lr_img = torch.rand(1, 3, side, side, dtype=torch.float64, requires_grad=True)
    gen(lr_img)[:, :, centre * scale : (centre + 1) * scale, centre * scale : (centre + 1) * scale].sum().backward()
    rows, cols = (lr_img.grad.abs().sum((0, 1)) > 0).nonzero(as_tuple=True)
    assert int(max((rows - centre).abs().max(), (cols - centre).abs().max())) == radius


def test_context_radius_of_the_paper_generator_is_two_per_block_plus_eight() -> None:
    assert context_radius(Generator(scale=4, blocks=16)) == 40
    assert context_radius(Generator(scale=4, blocks=16, bicubic_skip=True)) == 40


def test_tile_spans_cover_the_length_in_near_equal_pieces() -> None:
    assert tile_spans(300, 64) == [(0, 60), (60, 120), (120, 180), (180, 240), (240, 300)]
    assert tile_spans(10, 64) == [(0, 10)]
    assert tile_spans(65, 64) == [(0, 33), (33, 65)]


@pytest.mark.parametrize(
    ("scale", "bicubic_skip", "channels", "tile", "upsampler"),
    [
        (4, True, 3, 128, "pixelshuffle"),
        (4, False, 3, 100, "pixelshuffle"),
        (2, True, 0, 75, "pixelshuffle"),
        (4, True, 3, 90, "nearest"),
    ],
    ids=["x4-bicubic-skip-rgb", "x4-plain-rgb", "x2-gray", "x4-nearest"],
)
def test_tiled_inference_equals_whole_image_inference(
    scale: int, bicubic_skip: bool, channels: int, tile: int, upsampler: str
) -> None:
    gen = random_generator(scale=scale, bicubic_skip=bicubic_skip, upsampler=upsampler)
    lr_img = smooth_image(200, 200, channels)  # 2×2 or 3×3 tiles: seams both ways
    whole = generator_upscaler(gen, CPU_FP32)(lr_img)
    assert whole.std() > 10  # not clamped flat, or the comparison would prove nothing
    tiled = upscale_image(gen, lr_img, CPU_FP32, tile=tile)
    assert tiled.shape == whole.shape == (200 * scale, 200 * scale, *lr_img.shape[2:])
    assert psnr(tiled, whole) >= 50
    assert np.abs(tiled.astype(int) - whole).max() <= 1  # float summation order differs between tile shapes


def test_too_little_context_breaks_the_equality(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above has teeth: with too little context the tile seams show. (Far pixels weigh
    little in a random-weight model: a quarter of the context already passes 50 dB, hence the
    max-difference bound above; the gradient test shows the radius is exact.)"""
    gen = random_generator()
    lr_img = smooth_image(64, 64)
    whole = generator_upscaler(gen, CPU_FP32)(lr_img)
    monkeypatch.setattr(srgan.inference.tiling, "context_radius", lambda gen: 1)  # the true radius is 12
    tiled = upscale_image(gen, lr_img, CPU_FP32, tile=32)
    assert np.abs(tiled.astype(int) - whole).max() > 5


def test_bf16_autocast_stays_close_to_fp32() -> None:
    """The `--precision bf16` path (what `auto` picks on AVX-512 BF16 CPUs and CUDA) runs and
    moves pixels by at most a few grey levels on this model (measured 51 dB, max 2)."""
    gen = random_generator(bicubic_skip=False)
    lr_img = smooth_image(40, 40)
    fp32 = upscale_image(gen, lr_img, CPU_FP32, tile=20)
    bf16 = upscale_image(gen, lr_img, Runtime(torch.device("cpu"), "bf16"), tile=20)
    assert psnr(bf16, fp32) >= 40


@pytest.mark.parametrize("channels", [3, 0])
def test_a_batch_of_frames_equals_each_frame_alone(channels: int) -> None:
    """Video frames go through `upscale_batch` several at a time: batching changes only the float
    summation order (at most one grey level), never which frame a pixel lands in."""
    gen = random_generator()
    frames = np.stack([smooth_image(40, 52, channels, seed=k) for k in range(3)])  # three different frames
    batch = upscale_batch(gen, frames, CPU_FP32, tile=24)
    assert batch.shape == (3, 160, 208, *frames.shape[3:])
    for k in range(3):
        alone = upscale_image(gen, frames[k], CPU_FP32, tile=24)
        assert np.abs(batch[k].astype(int) - alone).max() <= 1
        assert psnr(batch[k], alone) >= 50
    assert psnr(batch[0], batch[1]) < 30  # the frames differ, so a mix-up would show


# --- memory ---------------------------------------------------------------------------------------


def test_the_tile_for_free_memory_shrinks_with_it_between_the_bounds() -> None:
    """The paper's model (64 channels, ×4, 40 px of context) on GPUs with 80, 8 and 1 GB free:
    ~37·64 values of 2 bytes (bf16) an LR pixel, in half the free memory."""
    paper = {"channels": 64, "scale": 4, "context": 40}
    tiles = [tile_for_memory(free, **paper, element_bytes=2) for free in (80 * 10**9, 8 * 10**9, 10**9)]
    assert tiles == [MAX_AUTO_TILE, 512, 128]
    assert tile_for_memory(4 * 10**9, **paper, element_bytes=2) == 512
    assert tile_for_memory(4 * 10**9, **paper, element_bytes=4) == 256  # fp32: twice the bytes
    assert tile_for_memory(4 * 10**9, **paper, element_bytes=2, frames=4) == 128  # a video's batch of 4
    assert tile_for_memory(10**7, **paper, element_bytes=2) == tile_for_memory(0, **paper, element_bytes=2) == MIN_TILE
    frees = [int(1.5**k) for k in range(80)]
    swept = [tile_for_memory(free, **paper, element_bytes=2) for free in frees]
    assert swept == sorted(swept) and set(swept) == {MIN_TILE * 2**k for k in range(6)}  # 32 … 1024, never down


def test_the_default_tile_comes_from_free_gpu_memory_and_is_fixed_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the device query is replaced: the paper's generator, its context and its precision are real."""
    asked: list[torch.device] = []

    def mem_get_info(device: torch.device) -> tuple[int, int]:
        asked.append(device)
        return 4 * 10**9, 80 * 10**9

    monkeypatch.setattr(torch.cuda, "mem_get_info", mem_get_info)
    gen = Generator(scale=4, blocks=16, channels=64)
    cuda = torch.device("cuda")
    assert default_tile(gen, Runtime(cuda, "bf16")) == 512
    assert default_tile(gen, Runtime(cuda, "fp32")) == 256
    assert default_tile(gen, Runtime(cuda, "bf16"), frames=4) == 128
    assert asked == [cuda] * 3
    assert default_tile(gen, CPU_FP32) == default_tile(gen, CPU_FP32, frames=4) == DEFAULT_TILE
    assert len(asked) == 3  # the CPU's tile is fixed: no memory asked
    with pytest.raises(SystemExit):
        main(["upscale", "--help"])
    assert f"(default: {DEFAULT_TILE} on the CPU; on a GPU the largest" in " ".join(capsys.readouterr().out.split())


def out_of_memory_over(gen: Generator, side: int) -> None:
    """Make `gen` run out of memory as a device with room for `side`×`side` LR px would: a forward
    hook raises torch.OutOfMemoryError for larger inputs. Only the allocation failure is replaced;
    the test below makes a real one, in a subprocess."""

    def hook(module: nn.Module, args: tuple[torch.Tensor]) -> None:
        if max(args[0].shape[-2:]) > side:
            raise torch.OutOfMemoryError(f"out of memory for a {tuple(args[0].shape)} input")

    gen.register_forward_pre_hook(hook)


def test_a_run_keeps_the_halved_tile_for_its_next_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Tile 64 on 100 px images means 62 px crops with their context, over the 50 px that fit;
    tile 32 means at most 49 px. One warning for the run, not one per file, and each output is the
    one tile 32 gives."""
    gen = random_generator()
    out_of_memory_over(gen, 50)
    images = {name: smooth_image(100, 100, seed=seed) for seed, name in enumerate(("a.png", "b.png"))}
    for name, img in images.items():
        Image.fromarray(img).save(tmp_path / name)
    jobs = [Job(tmp_path / name, tmp_path / "out" / name) for name in images]
    assert upscale_files(gen, jobs, CPU_FP32, tile=64) == 0
    err = capsys.readouterr().err
    assert err.splitlines() == ["warning: out of memory at tile 64 on cpu; retrying at tile 32"]
    for name, img in images.items():
        assert np.array_equal(
            np.asarray(Image.open(tmp_path / "out" / name)), upscale_image(gen, img, CPU_FP32, tile=32)
        )


def test_out_of_memory_at_the_smallest_tile_is_one_line_per_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing fits: each file fails in one line naming it, the run goes on, and a batch of frames
    is told it may pass fewer at once."""
    gen = random_generator()
    out_of_memory_over(gen, 0)
    for name in ("a.png", "b.png"):
        Image.fromarray(smooth_image(40, 40)).save(tmp_path / name)
    jobs = [Job(tmp_path / name, tmp_path / "out" / name) for name in ("a.png", "b.png")]
    assert upscale_files(gen, jobs, CPU_FP32, tile=2 * MIN_TILE) == 2
    smallest = f"out of memory on cpu even at tile {MIN_TILE}, the smallest; close other programs"
    assert capsys.readouterr().err.splitlines() == [
        f"warning: out of memory at tile {2 * MIN_TILE} on cpu; retrying at tile {MIN_TILE}",
        f"error: {tmp_path / 'a.png'}: {smallest}",
        f"error: {tmp_path / 'b.png'}: {smallest}",  # already at the smallest: no second warning
    ]
    assert not (tmp_path / "out").exists()  # made by the first write only
    frames = np.stack([smooth_image(40, 40, seed=k) for k in range(4)])
    with pytest.raises(OutOfMemory, match=f"{smallest} or upscale fewer than 4 frames at once \\(--batch\\)$"):
        upscale_batch(gen, frames, CPU_FP32, tile=MIN_TILE)


# --- image modes ----------------------------------------------------------------------------------


def test_rgb_png_in_rgb_png_out(tmp_path: Path, model_file: Path) -> None:
    rgb = smooth_image(20, 30)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    upscale_cli(tmp_path / "in.png", "-o", tmp_path / "out.png", "--model", model_file)
    with Image.open(tmp_path / "out.png") as out:
        assert (out.format, out.mode, out.size) == ("PNG", "RGB", (120, 80))
        expected = upscale_image(random_generator(), rgb, CPU_FP32)
        assert np.array_equal(np.asarray(out), expected)


def test_gray_in_gives_gray_out(tmp_path: Path, model_file: Path) -> None:
    gray = smooth_image(20, 30, channels=0)
    Image.fromarray(gray).save(tmp_path / "in.png")
    upscale_cli(tmp_path / "in.png", "-o", tmp_path / "out.png", "--model", model_file)
    with Image.open(tmp_path / "out.png") as out:
        assert (out.mode, out.size) == ("L", (120, 80))
        assert np.array_equal(np.asarray(out), upscale_image(random_generator(), gray, CPU_FP32))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_upscaled_by_bicubic_and_reattached(tmp_path: Path, model_file: Path, mode: str) -> None:
    color = smooth_image(20, 30, channels=3 if mode == "RGBA" else 0)
    alpha = np.tile(np.linspace(0, 255, 30).astype(np.uint8), (20, 1))
    Image.fromarray(np.dstack([color, alpha]), mode=mode).save(tmp_path / "in.png")
    upscale_cli(tmp_path / "in.png", "-o", tmp_path / "out.png", "--model", model_file)
    with Image.open(tmp_path / "out.png") as out:
        assert (out.mode, out.size) == (mode, (120, 80))
        pixels = np.asarray(out)
    assert np.array_equal(
        pixels[..., -1], np.asarray(Image.fromarray(alpha).resize((120, 80), Image.Resampling.BICUBIC))
    )
    expected = upscale_image(random_generator(), color, CPU_FP32)
    assert np.array_equal(pixels[..., :-1].squeeze(-1) if mode == "LA" else pixels[..., :3], expected)


def test_sixteen_bit_gray_is_read_as_round_v_over_257_and_written_8_bit(tmp_path: Path, model_file: Path) -> None:
    wide = (smooth_image(20, 30, channels=0).astype(np.uint16) * 257 + 100).astype(np.uint16)
    Image.fromarray(wide).save(tmp_path / "in.png")  # mode I;16
    picture = read_picture(tmp_path / "in.png", scale=4, max_output_pixels=10**6)
    assert picture.color.dtype == np.uint8 and picture.color.ndim == 2
    assert np.array_equal(picture.color, ((wide.astype(int) + 128) // 257).astype(np.uint8))
    upscale_cli(tmp_path / "in.png", "-o", tmp_path / "out.png", "--model", model_file)
    with Image.open(tmp_path / "out.png") as out:
        assert (out.mode, out.size) == ("L", (120, 80))


def test_exif_orientation_is_applied(tmp_path: Path, model_file: Path) -> None:
    stored = smooth_image(20, 30)  # stored 30 wide, 20 high; tag 6 = shown rotated 90° clockwise
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "in.png", exif=exif)
    upscale_cli(tmp_path / "in.png", "-o", tmp_path / "out.png", "--model", model_file)
    upright = np.asarray(Image.fromarray(stored).transpose(Image.Transpose.ROTATE_270))
    with Image.open(tmp_path / "out.png") as out:
        assert out.size == (80, 120)
        assert np.array_equal(np.asarray(out), upscale_image(random_generator(), upright, CPU_FP32))


@pytest.mark.parametrize("transparent", [False, True])
def test_palette_images(tmp_path: Path, model_file: Path, transparent: bool) -> None:
    palette = Image.fromarray(smooth_image(20, 30)).quantize(16)
    if transparent:
        palette.info["transparency"] = 0
    palette.save(tmp_path / "in.png")
    upscale_cli(tmp_path / "in.png", "-o", tmp_path / "out.png", "--model", model_file)
    with Image.open(tmp_path / "out.png") as out:
        assert (out.mode, out.size) == ("RGBA" if transparent else "RGB", (120, 80))
        expected = upscale_image(random_generator(), np.asarray(palette.convert("RGB")), CPU_FP32)
        assert np.array_equal(np.asarray(out)[..., :3], expected)
        if transparent:
            assert (np.asarray(out)[..., 3] < 255).any()


@pytest.mark.parametrize(
    ("suffix", "pillow_format"), [(".jpg", "JPEG"), (".jpeg", "JPEG"), (".webp", "WEBP"), (".png", "PNG")]
)
def test_output_format_follows_the_extension(tmp_path: Path, model_file: Path, suffix: str, pillow_format: str) -> None:
    Image.fromarray(smooth_image(12, 16)).save(tmp_path / "in.jpg", quality=95)
    upscale_cli(tmp_path / "in.jpg", "-o", tmp_path / f"out{suffix}", "--model", model_file)
    with Image.open(tmp_path / f"out{suffix}") as out:
        assert (out.format, out.size) == (pillow_format, (64, 48))


# --- inputs, outputs and planning -----------------------------------------------------------------


def test_folder_output_keeps_names_with_the_chosen_or_own_extension(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.jpg", "b.png", "c.tif", "notes.txt"):
        (folder / name).touch()
    own = plan_jobs([folder], str(tmp_path / "out"))
    assert [(j.source.name, j.target.name) for j in own] == [("a.jpg", "a.jpg"), ("b.png", "b.png"), ("c.tif", "c.png")]
    webp = plan_jobs([folder / "a.jpg", folder / "b.png"], str(tmp_path / "out"), "webp")
    assert [j.target for j in webp] == [tmp_path / "out" / "a.webp", tmp_path / "out" / "b.webp"]
    assert plan_jobs([folder / "a.jpg"], str(tmp_path / "big.png")) == [Job(folder / "a.jpg", tmp_path / "big.png")]
    assert plan_jobs([folder / "a.jpg"], str(tmp_path / "results")) == [
        Job(folder / "a.jpg", tmp_path / "results" / "a.jpg")
    ]


@pytest.mark.parametrize(
    ("inputs", "output", "fmt", "message"),
    [
        (["a.jpg", "b.png"], "out.png", None, "several inputs need an output folder"),
        (["a.jpg"], "out.tif", None, "cannot write .tif"),
        (["a.jpg"], "out.png", "jpg", "disagrees with --format jpg"),
        (["a.jpg", "sub/a.png"], "out", "png", "is also"),
        (["a.jpg"], ".", None, "would replace the input"),
        (["empty"], "out", None, "no images"),
    ],
)
def test_plans_that_cannot_work_are_refused_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inputs: list[str], output: str, fmt: str | None, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "empty").mkdir()
    for name in ("a.jpg", "sub/a.png"):
        (tmp_path / name).touch()
    with pytest.raises(SrganError, match=message):
        plan_jobs(inputs, output, fmt)


def test_model_uris_are_told_from_paths() -> None:
    assert is_model_uri("runs:/0123abcd/generator") and is_model_uri("models:/srgan/1")
    assert not is_model_uri("models/srgan.pt") and not is_model_uri("C:/models/srgan.pt")


# --- bad input ------------------------------------------------------------------------------------


def test_each_bad_file_gets_one_line_and_the_others_are_processed(
    tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(smooth_image(12, 16)).save(inputs / "good.png")
    Image.fromarray(smooth_image(12, 16)).save(inputs / "blocked.png")
    (inputs / "text.png").write_text("not pixels\n")
    buffer = io.BytesIO()
    Image.fromarray(smooth_image(30, 30)).save(buffer, format="PNG")
    (inputs / "truncated.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    Image.fromarray(smooth_image(40, 60)).save(inputs / "large.png")  # 240 × 160 = 38,400 output pixels
    out = tmp_path / "out"
    (out / "blocked.png").mkdir(parents=True)  # a folder where the output file should go
    with pytest.raises(SystemExit) as exit_info:
        upscale_cli(inputs, tmp_path / "missing.png", "-o", out, "--model", model_file, "--max-output-pixels", "20000")
    assert exit_info.value.code == 2
    errors = error_lines(capsys.readouterr().err)
    assert errors == [
        f"error: {out / 'blocked.png'}: cannot write (Is a directory)",
        f"error: {inputs / 'large.png'}: too many pixels (60×40 > 1250 input pixels, i.e. 20000 output pixels "
        "at ×4; see --max-output-pixels)",
        f"error: {inputs / 'text.png'}: not an image",
        f"error: {inputs / 'truncated.png'}: truncated",
        f"error: {tmp_path / 'missing.png'}: cannot read (No such file or directory)",
        "error: 5 of 6 images failed",
    ]
    with Image.open(out / "good.png") as good:
        assert good.size == (64, 48)
    assert sorted(p.name for p in out.iterdir()) == ["blocked.png", "good.png"]  # no temp files left


def test_a_model_file_of_the_wrong_kind_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save_discriminator(tmp_path / "disc.pt", Discriminator(channels=8), {"channels": 8, "norm": "batch"})
    Image.fromarray(smooth_image(12, 16)).save(tmp_path / "in.png")
    with pytest.raises(SystemExit) as exit_info:
        upscale_cli(tmp_path / "in.png", "-o", tmp_path / "out.png", "--model", tmp_path / "disc.pt")
    assert exit_info.value.code == 2
    assert error_lines(capsys.readouterr().err) == [
        f"error: {tmp_path / 'disc.pt'}: is a srgan-discriminator-v1 file, expected srgan-generator-v1"
    ]
    assert not (tmp_path / "out.png").exists()


def test_what_the_output_format_cannot_hold_is_refused_before_inference(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Image.fromarray(np.zeros((4, 4, 4), np.uint8), mode="RGBA").save(tmp_path / "alpha.png")
    Image.fromarray(np.zeros((2, 4100, 3), np.uint8)).save(tmp_path / "wide.png")
    jobs = [Job(tmp_path / "alpha.png", tmp_path / "alpha.jpg"), Job(tmp_path / "wide.png", tmp_path / "wide.webp")]
    assert upscale_files(random_generator(), jobs, CPU_FP32) == 2
    assert error_lines(capsys.readouterr().err) == [
        f"error: {tmp_path / 'alpha.jpg'}: JPEG has no alpha channel and the input has one; write .png or .webp",
        f"error: {tmp_path / 'wide.webp'}: WEBP holds at most 16383 pixels a side, the output has 16400; write .png",
    ]


def test_an_existing_output_is_never_half_overwritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(smooth_image(12, 16)).save(tmp_path / "in.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "in.png").write_bytes(b"the old output")

    def disk_full(self: Image.Image, fp: Path, *args: object, **kwargs: object) -> None:
        Path(fp).write_bytes(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    failed = upscale_files(random_generator(), [Job(tmp_path / "in.png", tmp_path / "out" / "in.png")], CPU_FP32)
    assert failed == 1
    assert (tmp_path / "out" / "in.png").read_bytes() == b"the old output"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["in.png"]


# --- in a user's hands ----------------------------------------------------------------------------


def srgan_command(*args: str | Path, cwd: Path, **popen: object) -> subprocess.Popen[str]:
    """The installed `srgan` command, as a shell runs it (no MLflow store in the environment)."""
    env = {key: value for key, value in os.environ.items() if key not in ("MLFLOW_TRACKING_URI", "DVC_ROOT")}
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen}
    return subprocess.Popen([str(BIN / "srgan"), *map(str, args), *FP32], cwd=cwd, env=env, text=True, **streams)


# The out-of-memory test's subprocess: `srgan upscale` at --tile 128 (which also makes the
# imports, the thread and oneDNN's convolutions for those shapes), then at --tile 256 with the
# address space limited to that run's peak plus 48 MiB. Set here, after import: torch reserves
# gigabytes of address space as it loads.
OUT_OF_MEMORY_RUN = """
import re, resource, sys
from srgan.cli import main
model, photo, given, limited = sys.argv[1:]
options = ["--model", model, "--device", "cpu", "--precision", "fp32", "--threads", "1"]
main(["upscale", photo, "-o", given, "--tile", "128", *options])
peak = int(re.search(r"VmPeak:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (peak + 48 * 2**20, resource.getrlimit(resource.RLIMIT_AS)[1]))
main(["upscale", photo, "-o", limited, "--tile", "256", *options])
"""


def test_a_tile_out_of_memory_is_retried_at_half_and_gives_the_pixels_of_that_tile(tmp_path: Path) -> None:
    """A real allocation failure on the CPU (RLIMIT_AS: PyTorch's "DefaultCPUAllocator: can't
    allocate memory"), not a mocked one. The limit is the --tile 128 run's own peak plus 48 MiB:
    the retry at 128 fits, with room for what the failed try leaves allocated, while a 256 tile
    needs about 3× the floats of a 128 one (16 channels: ~100 MB more; the window measured here:
    16 to 80 MiB over the peak). The output is byte for byte the --tile 128 run's."""
    save_generator(
        tmp_path / "gen.pt",
        random_generator(channels=16),
        generator_config(scale=4, blocks=2, channels=16, bicubic_skip=True),
    )
    Image.fromarray(smooth_image(256, 256)).save(tmp_path / "photo.png")
    proc = subprocess.run(
        [sys.executable, "-c", OUT_OF_MEMORY_RUN, "gen.pt", "photo.png", "given.png", "retried.png"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert [line for line in proc.stderr.splitlines() if not line.startswith("gen.pt:")] == [
        "warning: out of memory at tile 256 on cpu; retrying at tile 128"
    ]
    assert (tmp_path / "retried.png").read_bytes() == (tmp_path / "given.png").read_bytes()


@pytest.mark.parametrize("output", ["same.png", "./same.png", "link.png"])
def test_the_input_file_is_never_its_own_output(
    tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], output: str
) -> None:
    monkeypatch.chdir(tmp_path)
    Image.fromarray(smooth_image(12, 16)).save("same.png")
    (tmp_path / "link.png").symlink_to(tmp_path / "same.png")
    original = (tmp_path / "same.png").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        upscale_cli("same.png", "-o", output, "--model", model_file)
    assert exit_info.value.code == 2
    assert error_lines(capsys.readouterr().err) == [
        f"error: {output}: the output would replace the input; choose another output name"
    ]
    assert (tmp_path / "same.png").read_bytes() == original


def test_model_files_that_are_not_checkpoints_get_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Image.fromarray(smooth_image(12, 16)).save(tmp_path / "in.png")
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "model.json").write_text('{"format": "srgan-generator-v1"}')
    mismatched = tmp_path / "mismatched.pt"
    torch.save(
        {
            "format": "srgan-generator-v1",
            "config": generator_config(4, 3, 8, True),
            "state_dict": random_generator(blocks=2).state_dict(),
        },
        mismatched,
    )
    expected = {
        "random.pt": "is not an srgan checkpoint (not a readable PyTorch file)",
        "model.json": "is not an srgan checkpoint (not a readable PyTorch file)",
        "mismatched.pt": "its weights do not fit its stored config",
    }
    for name, message in expected.items():
        with pytest.raises(SystemExit) as exit_info:
            upscale_cli(tmp_path / "in.png", "-o", tmp_path / "out.png", "--model", tmp_path / name)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: {tmp_path / name}: {message}"), err
    assert not (tmp_path / "out.png").exists()


def test_a_tile_smaller_than_the_minimum_is_refused(
    tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Image.fromarray(smooth_image(12, 16)).save(tmp_path / "in.png")
    with pytest.raises(SystemExit) as exit_info:
        upscale_cli(tmp_path / "in.png", "-o", tmp_path / "out.png", "--model", model_file, "--tile", "1")
    assert exit_info.value.code == 2
    assert f"--tile: must be at least {MIN_TILE} px" in capsys.readouterr().err
    upscale_cli(tmp_path / "in.png", "-o", tmp_path / "out.png", "--model", model_file, "--tile", str(MIN_TILE))
    assert (tmp_path / "out.png").exists()


def test_the_scale_is_stated_on_a_terminal_and_checked_when_given(tmp_path: Path) -> None:
    x2 = tmp_path / "x2.pt"
    save_generator(x2, random_generator(scale=2), generator_config(scale=2, blocks=2, channels=8, bicubic_skip=True))
    Image.fromarray(smooth_image(12, 16)).save(tmp_path / "in.png")
    refused = srgan_command("upscale", "in.png", "-o", "out.png", "--model", x2, "--scale", "4", cwd=tmp_path)
    _, err = refused.communicate(timeout=120)
    assert refused.returncode == 2 and err == f"error: {x2}: a ×2 model, but --scale 4 was asked for\n"
    assert not (tmp_path / "out.png").exists()

    controller, terminal = pty.openpty()  # stderr on a terminal, as in a shell
    proc = srgan_command("upscale", "in.png", "-o", "out.png", "--model", x2, cwd=tmp_path, stderr=terminal)
    os.close(terminal)
    proc.communicate(timeout=120)
    shown = b""
    with contextlib.suppress(OSError):  # EIO once the command has closed its end
        while chunk := os.read(controller, 4096):
            shown += chunk
    os.close(controller)
    assert proc.returncode == 0
    assert f"{x2}: ×2; 1 image to upscale" in shown.decode()
    with Image.open(tmp_path / "out.png") as out:
        assert out.size == (32, 24)


def test_an_animated_gif_gives_its_first_frame_alone_or_in_a_folder_with_a_warning(
    tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    frames = [Image.fromarray(smooth_image(12, 16, seed=seed)).convert("P") for seed in (1, 2, 3)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    upscale_cli(folder / "anim.gif", "-o", tmp_path / "alone.png", "--model", model_file)
    upscale_cli(folder, "-o", tmp_path / "out", "--model", model_file)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {folder / 'anim.gif'}: animated (3 frames); only the first frame is upscaled"] * 2
    alone = np.array(Image.open(tmp_path / "alone.png"))
    assert alone.shape == (48, 64, 3)
    assert np.array_equal(np.array(Image.open(tmp_path / "out" / "anim.png")), alone)


def test_ctrl_c_while_upscaling_a_folder_says_how_many_were_written(tmp_path: Path, model_file: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(40):
        Image.fromarray(smooth_image(200, 200, seed=i)).save(folder / f"photo_{i:02d}.png")
    out = tmp_path / "out"
    proc = srgan_command("upscale", folder, "-o", out, "--model", model_file, cwd=tmp_path, start_new_session=True)
    deadline = time.time() + 120
    while not (out.is_dir() and any(out.glob("photo_*.png"))) and time.time() < deadline:  # not a temp file
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole foreground group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    written = sorted(out.iterdir())
    assert err.strip().splitlines()[-1] == f"interrupted: {len(written)} of 40 images written"
    assert 1 <= len(written) < 40
    for path in written:  # complete images only, no temporary files
        with Image.open(path) as image:
            image.load()
            assert image.size == (800, 800)


def test_a_run_uri_outside_the_repository_gets_a_hint_and_leaves_no_store(tmp_path: Path) -> None:
    Image.fromarray(smooth_image(12, 16)).save(tmp_path / "in.png")
    proc = srgan_command(
        "upscale", "in.png", "-o", "out.png", "--model", "runs:/0123456789abcdef/generator", cwd=tmp_path
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip().splitlines()[-1] == (
        f"error: runs:/0123456789abcdef/generator: no MLflow store here ({tmp_path / 'mlflow.db'} does not exist); "
        "run from the repository that ran the pipeline, or set MLFLOW_TRACKING_URI (e.g. sqlite:////path/to/repo/mlflow.db)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_an_output_folder_that_is_a_file_is_named_as_such(
    tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "in").mkdir()
    Image.fromarray(smooth_image(12, 16)).save(tmp_path / "in" / "a.png")
    (tmp_path / "out").write_text("a file without an extension")
    with pytest.raises(SystemExit):
        upscale_cli(tmp_path / "in", "-o", tmp_path / "out", "--model", model_file)
    assert error_lines(capsys.readouterr().err) == [
        f"error: {tmp_path / 'out'}: is a file, not a folder; name a new folder (or, for one input, a file with an "
        "image or video extension)"
    ]
    assert (tmp_path / "out").read_text() == "a file without an extension"


def png_claiming(path: Path, width: int, height: int) -> None:
    """A valid PNG header claiming width×height RGB pixels, with two rows of data: a few hundred
    bytes on disk, whatever it claims (the decompression bomb a header check must stop)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    rows = zlib.compress(b"\0" * (1 + 3 * width) * 2)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


BEYOND_MEMORY = re.escape("more output pixels than this machine's ") + r"\d+" + re.escape(" GiB of memory can hold")


def test_max_output_pixels_beyond_what_memory_holds_is_refused(
    tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Image.fromarray(smooth_image(12, 16)).save(tmp_path / "in.png")
    with pytest.raises(SystemExit) as exit_info:
        upscale_cli(
            tmp_path / "in.png", "-o", tmp_path / "out.png", "--model", model_file, "--max-output-pixels", 10**15
        )
    assert exit_info.value.code == 2
    (line,) = error_lines(capsys.readouterr().err)
    ceiling = max_output_pixels_ceiling()
    assert re.fullmatch(
        f"error: --max-output-pixels 1000000000000000: {BEYOND_MEMORY} at 7 bytes each; use at most {ceiling}", line
    ), line
    assert not (tmp_path / "out.png").exists()
    with pytest.raises(SrganError, match=f"^--max-output-pixels 1000000000000000: {BEYOND_MEMORY}"):
        upscale_files(
            random_generator(), [Job(tmp_path / "in.png", tmp_path / "out.png")], CPU_FP32, max_output_pixels=10**15
        )


def test_a_header_claiming_more_pixels_than_allowed_is_refused_before_decoding(
    tmp_path: Path, model_file: Path
) -> None:
    """A 700-byte PNG claiming 100000×100000 pixels (1.6·10¹¹ output pixels at ×4, 30 GB decoded),
    at the largest --max-output-pixels accepted and beyond it: one line, nothing decoded. Under a
    6 GiB address-space limit, so that a regression fails here with a MemoryError instead of
    growing until the kernel kills it."""
    png_claiming(tmp_path / "huge.png", 100_000, 100_000)
    assert (tmp_path / "huge.png").stat().st_size < 1000
    ceiling = max_output_pixels_ceiling()
    bounded = {"preexec_fn": lambda: resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))}
    expected = {
        str(ceiling): re.escape(
            f"error: huge.png: too many pixels (100000×100000 > {ceiling // 16} input pixels, i.e. {ceiling} output "
            "pixels at ×4; see --max-output-pixels)"
        ),
        str(10**15): f"error: --max-output-pixels 1000000000000000: {BEYOND_MEMORY}.*",
    }
    for option, line in expected.items():
        proc = srgan_command(
            "upscale", "huge.png", "-o", "out.png", "--model", model_file, "--max-output-pixels", option,
            cwd=tmp_path, **bounded,
        )  # fmt: skip
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, err
        assert re.fullmatch(line, error_lines(err)[0]), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen.pt", "huge.png"]


def test_a_broken_link_in_a_folder_is_named_and_fails_the_run(
    tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(smooth_image(12, 16)).save(folder / "good.png")
    (folder / "gone.png").symlink_to(tmp_path / "deleted.png")
    with pytest.raises(SystemExit) as exit_info:
        upscale_cli(folder, "-o", tmp_path / "out", "--model", model_file)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert error_lines(err) == [
        f"error: {folder / 'gone.png'}: broken link (points to the missing file {tmp_path / 'deleted.png'})",
        "error: 1 of 2 images failed",
    ]
    assert "2 images to upscale" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            "srgan-x2",
            "srgan-x2: neither a released model (srgan-t91bsd200-realistic, srgan-t91bsd200, srresnet-t91bsd200, "
            "srresnet-t91bsd200-realistic) nor an existing file",
        ),
        (
            "models/srgan.pt",
            "models/srgan.pt: file not found (`dvc repro` writes models/srgan.pt and models/srresnet.pt)",
        ),
        ("./x.pt", "./x.pt: file not found (`dvc repro` writes models/srgan.pt and models/srresnet.pt)"),
    ],
)
def test_an_unknown_model_name_lists_the_released_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], model: str, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    Image.fromarray(smooth_image(12, 16)).save("photo.png")
    with pytest.raises(SystemExit) as exit_info:
        upscale_cli("photo.png", "-o", "out", "--model", model)
    assert exit_info.value.code == 2
    assert error_lines(capsys.readouterr().err) == [f"error: {message}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]
