"""Preprocess on real, generated files: good images in every layout, and every kind of bad one."""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srgan.core.config import DataParams, Params, PreprocessParams
from srgan.core.errors import SrganError
from srgan.data.imageio import read_image
from srgan.data.imresize import imresize_uint8
from srgan.data.patches import patch_corners, select_val_patches, split_images
from srgan.data.preprocess import prepare, preprocess

REPO = Path(__file__).resolve().parents[1]
HR, SCALE = 96, 4
SETTINGS = PreprocessParams(
    hr_size=HR, stride=96, val_fraction=0.3, max_val_patches=5, max_pixels=1_000_000, shard_size=16, workers=1
)


def png_claiming_size(path: Path, width: int, height: int) -> None:
    """A PNG whose header says width×height but whose data holds 8×8 pixels."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def _run_stage(cwd: Path) -> subprocess.CompletedProcess[str]:
    """`python -m stages.preprocess` as dvc.yaml runs it, from `cwd` (which holds params.yaml)."""
    return subprocess.run(
        [sys.executable, "-m", "stages.preprocess", "--raw", "raw", "--out", "data/prepared"],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _photo(height: int, width: int, seed: int) -> np.ndarray:
    """uint8 (H, W, 3): smooth gradients plus noise, so patches differ from each other."""
    y, x = np.mgrid[:height, :width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (height + width)], axis=2)
    noise = np.random.default_rng(seed).normal(0, 20, (height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def make_train_folder(folder: Path) -> None:
    """7 usable images (9 patches of 96 each) and 6 unusable ones, plus files that are no inputs."""
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(_photo(300, 300, 0)).save(folder / "good0.png")
    Image.fromarray(_photo(300, 300, 1)).save(folder / "good1.jpg", quality=95)
    Image.fromarray(_photo(300, 300, 2)).save(folder / "sub" / "good2.bmp")
    Image.fromarray(_photo(300, 300, 3)[:, :, 0]).save(folder / "gray.png")
    Image.fromarray(_photo(300, 320, 4)).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    Image.fromarray(_photo(300, 300, 5)[:, :, 1].astype(np.uint16) * 257).save(folder / "deep.png")
    Image.fromarray(np.dstack([_photo(300, 310, 6), np.full((300, 310), 128, np.uint8)])).save(folder / "rgba.png")
    Image.fromarray(_photo(50, 50, 7)).save(folder / "tiny.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "fake.jpg").write_text("this is not a photo")
    png_claiming_size(folder / "huge.png", 2000, 1000)
    Image.fromarray(_photo(300, 300, 8)).save(folder / "whole.jpg")
    data = (folder / "whole.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "whole.jpg").unlink()
    Image.fromarray(_photo(200, 200, 9)).save(folder / "whole.png")
    data = bytearray((folder / "whole.png").read_bytes())
    data[2000:2100] = bytes(100)
    (folder / "corrupt.png").write_bytes(bytes(data))
    (folder / "whole.png").unlink()
    (folder / "manifest.json").write_text("{}")
    (folder / "notes.txt").write_text("not an input")


def make_eval_folder(folder: Path) -> None:
    folder.mkdir(parents=True)
    Image.fromarray(_photo(101, 99, 10)).save(folder / "a.png")
    Image.fromarray(_photo(64, 48, 11)).save(folder / "a.tif")  # same output name as a.png
    Image.fromarray(_photo(50, 42, 12)[:, :, 2]).save(folder / "b.png")  # grayscale stays gray
    (folder / "broken.png").write_text("nope")


USABLE = ["cmyk.jpg", "deep.png", "good0.png", "good1.jpg", "gray.png", "rgba.png", "sub/good2.bmp"]
SKIPPED = [
    {"source": "train", "file": "corrupt.png", "reason": "corrupt"},
    {"source": "train", "file": "empty.png", "reason": "empty file"},
    {"source": "train", "file": "fake.jpg", "reason": "not an image"},
    {"source": "train", "file": "huge.png", "reason": "too many pixels (2000×1000 > 1000000)"},
    {"source": "train", "file": "tiny.png", "reason": "too small (50×50 < 96)"},
    {"source": "train", "file": "truncated.jpg", "reason": "truncated"},
    {"source": "eval/set", "file": "a.tif", "reason": "same output name as a.png"},
    {"source": "eval/set", "file": "broken.png", "reason": "not an image"},
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("raw")
    make_train_folder(root / "train")
    make_eval_folder(root / "set")
    return root / "train", root / "set"


@pytest.fixture(scope="module")
def prepared(inputs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    train_dir, eval_dir = inputs
    out = tmp_path_factory.mktemp("run") / "prepared"
    manifest = prepare(train_dir, {"set": eval_dir}, out, seed=0, scale=SCALE, settings=SETTINGS)
    return out, manifest


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_manifest_counts_and_skips(prepared: tuple[Path, dict]) -> None:
    out, manifest = prepared
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["skipped"] == SKIPPED
    train, val = manifest["train"], manifest["val"]
    assert sorted(train["images"] + val["images"]) == USABLE
    # round(0.3 * 7) = 2 validation images; 5 training images of 9 patches each.
    assert (train["num_images"], val["num_images"]) == (5, 2)
    assert train["num_patches"] == 45 and val["num_patches"] == 5
    assert [s["patches"] for s in train["shards"]] == [16, 16, 13]
    assert train["shards"][2] == {"hr": "train/hr_00002.npy", "lr": "train/lr_00002.npy", "patches": 13}
    assert val["shards"] == [{"hr": "val/hr_00000.npy", "lr": "val/lr_00000.npy", "patches": 5}]
    assert manifest["eval"] == {"set": {"images": ["a.png", "b.png"], "num_images": 2}}
    assert (manifest["scale"], manifest["hr_size"], manifest["lr_size"]) == (4, 96, 24)
    assert str(out.parent) not in (out / "manifest.json").read_text()  # no absolute paths


def test_train_and_val_are_disjoint_images(prepared: tuple[Path, dict]) -> None:
    _, manifest = prepared
    assert not set(manifest["train"]["images"]) & set(manifest["val"]["images"])


def test_shards_are_aligned_uint8_patches(prepared: tuple[Path, dict], inputs: tuple[Path, Path]) -> None:
    out, manifest = prepared
    for split in ("train", "val"):
        for shard in manifest[split]["shards"]:
            hr, lr = np.load(out / shard["hr"]), np.load(out / shard["lr"])
            assert hr.dtype == lr.dtype == np.uint8
            assert hr.shape == (shard["patches"], HR, HR, 3)
            assert lr.shape == (shard["patches"], HR // SCALE, HR // SCALE, 3)
    # The first training patch is the top-left corner of the first training image, and its LR
    # is that patch's own MATLAB bicubic downscale.
    hr = np.load(out / "train/hr_00000.npy", mmap_mode="r")
    lr = np.load(out / "train/lr_00000.npy", mmap_mode="r")
    first = read_image(inputs[0] / manifest["train"]["images"][0], max_pixels=10**6)
    np.testing.assert_array_equal(hr[0], first[:HR, :HR])
    np.testing.assert_array_equal(lr[0], imresize_uint8(np.asarray(hr[0]), 1 / SCALE))
    hr, lr = np.load(out / "val/hr_00000.npy"), np.load(out / "val/lr_00000.npy")
    np.testing.assert_array_equal(lr[4], imresize_uint8(hr[4], 1 / SCALE))


def test_eval_pngs_are_modcropped_with_their_lr(prepared: tuple[Path, dict], inputs: tuple[Path, Path]) -> None:
    out, _ = prepared
    hr_a = read_image(out / "eval/set/hr/a.png", max_pixels=10**6, keep_gray=True)
    np.testing.assert_array_equal(hr_a, _photo(101, 99, 10)[:100, :96])
    lr_a = read_image(out / "eval/set/lr/a.png", max_pixels=10**6, keep_gray=True)
    np.testing.assert_array_equal(lr_a, imresize_uint8(hr_a, 1 / SCALE))
    assert Image.open(out / "eval/set/hr/b.png").mode == "L"
    assert Image.open(out / "eval/set/lr/b.png").size == (10, 12)  # 42×50 -> modcrop 40×48 -> /4


def test_same_bytes_whatever_the_worker_count(
    prepared: tuple[Path, dict], inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    out, _ = prepared
    train_dir, eval_dir = inputs
    settings = PreprocessParams(**{**SETTINGS.__dict__, "workers": 2})
    prepare(train_dir, {"set": eval_dir}, tmp_path / "again", seed=0, scale=SCALE, settings=settings)
    assert _tree(tmp_path / "again") == _tree(out)
    assert [p.name for p in tmp_path.iterdir()] == ["again"]  # no staging folder left beside it


def test_existing_output_is_replaced_whole(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    train_dir, _ = inputs
    out = tmp_path / "prepared"
    (out / "train").mkdir(parents=True)
    (out / "train" / "hr_00099.npy").write_bytes(b"stale")
    prepare(train_dir, {}, out, seed=1, scale=SCALE, settings=SETTINGS)
    assert not (out / "train" / "hr_00099.npy").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prepared"]


def test_only_bad_images_fail_without_writing(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "empty.png").write_bytes(b"")
    (folder / "fake.jpg").write_text("no")
    Image.fromarray(_photo(50, 50, 0)).save(folder / "tiny.png")
    with pytest.raises(SrganError, match=r"none of its 3 image files is usable.*tiny.png: too small"):
        prepare(folder, {}, tmp_path / "out", seed=0, scale=SCALE, settings=SETTINGS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_split_rules() -> None:
    names = [f"im{i:02d}.jpg" for i in range(10)]
    train, val = split_images(names, 0.1, seed=0)
    assert len(val) == 1 and sorted(train + val) == names
    assert split_images(names, 0.1, seed=0) == (train, val)
    assert len(split_images(names, 0.25, seed=0)[1]) == 2  # round(2.5) = 2
    assert len(split_images(names, 0.99, seed=0)[1]) == 9  # at least one image left to train on
    assert split_images(names, 0.0, seed=0) == (names, [])
    assert len(split_images(names[:2], 0.01, seed=0)[1]) == 1  # at least one validation image
    assert split_images(names[:1], 0.1, seed=0) == (names[:1], names[:1])  # one image: val = its patches
    assert split_images(names[:1], 0.0, seed=0) == (names[:1], [])


def test_patch_grid() -> None:
    assert patch_corners(375, 500, 256, 128) == [(0, 0), (0, 128)]
    assert patch_corners(300, 300, 96, 96) == [(y, x) for y in (0, 96, 192) for x in (0, 96, 192)]
    assert patch_corners(255, 1000, 256, 128) == []


def test_val_patches_spread_over_images() -> None:
    sizes = {"a.png": (300, 300), "b.png": (96, 96), "c.png": (192, 96)}  # 9, 1 and 2 patches
    chosen = select_val_patches(sizes, hr_size=96, stride=96, limit=5, seed=0)
    assert sorted((name, len(corners)) for name, corners in chosen.items()) == [
        ("a.png", 2),
        ("b.png", 1),
        ("c.png", 2),
    ]
    assert chosen == select_val_patches(sizes, hr_size=96, stride=96, limit=5, seed=0)
    one_each = select_val_patches(sizes, hr_size=96, stride=96, limit=2, seed=0)
    assert [len(c) for c in one_each.values()] == [1, 1]


def _params(train: str, evals: tuple[str, ...]) -> Params:
    return Params(data=DataParams(train=train, eval=evals), preprocess=SETTINGS)


def test_missing_source_folder_says_to_download(tmp_path: Path) -> None:
    with pytest.raises(SrganError, match=r"div2k.*run the download stage"):
        preprocess(_params("div2k", ("set5",)), tmp_path / "raw", tmp_path / "out")


@pytest.mark.e2e  # the stage's own process, as DVC runs it
def test_stage_reads_params_and_raw_folders(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    train_dir, eval_dir = inputs
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "div2k").symlink_to(train_dir)
    (tmp_path / "raw" / "set5").symlink_to(eval_dir)
    (tmp_path / "params.yaml").write_text(
        "data: {train: div2k, eval: [set5]}\n"
        "preprocess: {hr_size: 96, stride: 96, val_fraction: 0.3, max_val_patches: 5, max_pixels: 1000000, "
        "workers: 1}\n"
    )
    result = _run_stage(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "preprocess: train 5 images / 45 patches, val 2 / 5, eval images: set5 2, skipped 8" in result.stdout
    manifest = json.loads((tmp_path / "data/prepared/manifest.json").read_text())
    assert manifest["eval"]["set5"]["num_images"] == 2
    assert manifest["train"]["num_images"] + manifest["val"]["num_images"] == 7


@pytest.mark.e2e  # the stage's own process, as DVC runs it
def test_a_single_training_image_is_warned_about_in_the_log_and_the_manifest(tmp_path: Path) -> None:
    for folder in ("raw/div2k", "raw/set5"):
        (tmp_path / folder).mkdir(parents=True)
    Image.fromarray(_photo(200, 200, 0)).save(tmp_path / "raw/div2k/only.png")
    Image.fromarray(_photo(120, 120, 1)).save(tmp_path / "raw/set5/a.png")
    (tmp_path / "params.yaml").write_text(
        "data: {train: div2k, eval: [set5]}\npreprocess: {hr_size: 96, stride: 96, val_fraction: 0.1, workers: 1}\n"
    )
    result = _run_stage(tmp_path)
    assert result.returncode == 0, result.stderr
    message = (
        "raw/div2k: only one usable training image, so validation uses patches of it: "
        "the validation PSNR is not held out; add images to data.train"
    )
    assert f"warning: {message}" in result.stderr.splitlines()
    manifest = json.loads((tmp_path / "data/prepared/manifest.json").read_text())
    assert manifest["warnings"] == [message]
    assert manifest["train"]["images"] == manifest["val"]["images"] == ["only.png"]


@pytest.mark.e2e  # the stage's own process, as DVC runs it
def test_stage_rejects_unknown_params_key(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("preprocess:\n  hr_sise: 128\n")
    result = _run_stage(tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "preprocess.hr_sise" in lines[0]
    assert not (tmp_path / "data").exists()


@pytest.mark.e2e  # the stage's own process, as DVC runs it
def test_ctrl_c_in_a_terminal_stops_the_pool_with_one_message_and_no_partial_out(tmp_path: Path) -> None:
    """A terminal's SIGINT reaches the stage and every pool worker at once. Only the main process
    answers: exit 130 and one line, no worker traceback, no process left, nothing half-written."""
    train = tmp_path / "raw" / "div2k"
    train.mkdir(parents=True)
    for seed in range(40):  # 81 patches each: seconds of work for the pool
        Image.fromarray(_photo(480, 480, seed)).save(train / f"{seed}.png")
    (tmp_path / "raw" / "set5").symlink_to(train)
    (tmp_path / "params.yaml").write_text(
        "data: {train: div2k, eval: [set5]}\npreprocess: {hr_size: 96, stride: 48, shard_size: 16, workers: 2}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.preprocess", "--raw", "raw", "--out", "data/prepared"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("data/.prepared.*.tmp/train/hr_00000.npy")):  # the pool is cutting patches
        assert proc.poll() is None and time.monotonic() < deadline, "preprocess ended before it was interrupted"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and "PoolWorker" not in err
    assert err.strip().splitlines()[-1] == "interrupted"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == []  # no out, no staging folder
    deadline = time.monotonic() + 10
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _group_alive(proc.pid), "a pool worker outlived the stage"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_what_a_pool_worker_imports_holds_neither_torch_nor_mlflow() -> None:
    """Spawned workers import the stage module again (as `__mp_main__`) and the library; with
    torch and mlflow each would hold about 600 MB more (benchmarks/data_scale.py measured it)."""
    code = "import sys, stages.preprocess; print(sorted({'torch', 'mlflow', 'pandas'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
