"""The degradations of `srgan.data.degrade`: pure functions of (image, name, key), of the size and
strength their names say, and what eval sets (`<set>@<degradation>`), `srgan eval --degrade` and
preprocess make of them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srgan.cli import main
from srgan.core.config import PreprocessParams
from srgan.core.errors import SrganError
from srgan.core.metrics import convention
from srgan.data import sources
from srgan.data.degrade import check_degradation, degrade, jpeg
from srgan.data.imageio import read_image
from srgan.data.imresize import imresize_uint8
from srgan.data.preprocess import prepare
from srgan.evaluation.evaluate import pairs_from_prepared
from srgan.evaluation.folders import pairs_from_hr_folder
from tests.test_upscale import smooth_image


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a.astype(float) - b.astype(float)) ** 2)))


@pytest.mark.parametrize("name", ["jpeg75", "jpeg50", "noise5", "crf28", "realistic"])
@pytest.mark.parametrize("shape", [(48, 64, 3), (33, 21, 3), (40, 40)], ids=["rgb", "odd-sides", "gray"])
def test_each_degradation_is_a_pure_function_of_image_name_and_key(name: str, shape: tuple[int, ...]) -> None:
    image = smooth_image(*shape[:2], shape[2] if len(shape) == 3 else 0)
    image = image if len(shape) == 3 else image.reshape(shape)
    out = degrade(image, name, "key")
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out, degrade(image.copy(), name, "key"))


def test_strengths_are_what_the_names_say() -> None:
    image = smooth_image(96, 96)
    assert 0 < _rms(jpeg(image, 95), image) < _rms(degrade(image, "jpeg75", "k"), image)
    assert _rms(degrade(image, "jpeg75", "k"), image) < _rms(degrade(image, "jpeg50", "k"), image)
    assert _rms(degrade(image, "crf18", "k"), image) < _rms(degrade(image, "crf28", "k"), image)
    flat = np.full((128, 128, 3), 128, np.uint8)
    noise = degrade(flat, "noise5", "k").astype(float) - 128
    assert abs(noise.std() - 5) < 0.1 and abs(noise.mean()) < 0.1
    assert np.corrcoef(noise[..., 0].ravel(), noise[..., 1].ravel())[0, 1] < 0.05  # drawn per channel
    assert not np.array_equal(degrade(flat, "noise5", "k"), degrade(flat, "noise5", "other key"))


def test_the_realistic_chain_leaves_about_one_patch_in_six_clean() -> None:
    """Each step on its own draw: clean with probability 0.75 · 0.6 · 0.4 = 0.18."""
    patch = smooth_image(32, 32)
    clean = [np.array_equal(degrade(patch, "realistic", f"0/img.png/{i},0"), patch) for i in range(400)]
    assert 0.12 < np.mean(clean) < 0.24, np.mean(clean)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("jpeg500", "--degrade: 'jpeg500': jpeg takes 1-95"),
        ("blur2", "--degrade: 'blur2' is not a degradation: jpeg<1-95>, noise<1-50>, crf<0-51> or realistic"),
        ("noise0", "--degrade: 'noise0': noise takes 1-50"),
    ],
)
def test_an_unknown_or_out_of_range_degradation_is_refused(name: str, message: str) -> None:
    with pytest.raises(SrganError) as refused:
        check_degradation(name, "--degrade")
    assert str(refused.value) == message


def test_eval_entries_with_a_degradation_share_their_source() -> None:
    assert sources.split_degradation("bsd100@jpeg50") == ("bsd100", "jpeg50")
    url = "https://user@example.com/sets/b100.zip"  # a URL's user@host is not a degradation
    assert sources.split_degradation(url) == (url, None)
    assert sources.slug("bsd100@jpeg50") == "bsd100@jpeg50"
    assert sources.slug("/data/x@crf28") == f"{sources.slug('/data/x')}@crf28"
    assert sources.raw_dir("raw", "sample@noise5", "eval") == sources.raw_dir("raw", "sample", "eval")
    sources.check_source("bsd100@realistic", "data.eval[1]")
    with pytest.raises(SrganError, match=r"^params: data.eval\[1\]=bsd100@jpeg0: 'jpeg0': jpeg takes 1-95$"):
        sources.check_source("bsd100@jpeg0", "data.eval[1]")
    with pytest.raises(SrganError, match=r"^params: data.train=sample@jpeg50: .* from preprocess.degradation"):
        sources.check_source("sample@jpeg50", "data.train")


def test_a_degraded_eval_set_and_srgan_eval_degrade_measure_the_same_lr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """preprocess's `<set>@noise5` LR is `srgan eval --degrade noise5`'s, drawn from the image's
    stem whatever the seed; the clean set beside it keeps the bicubic LR."""
    folder = tmp_path / "hr"
    folder.mkdir()
    for name, size in (("a", (104, 200)), ("b", (212, 108))):  # the least `srgan eval` measures
        Image.fromarray(smooth_image(*size)).save(folder / f"{name}.png")
    settings = PreprocessParams(hr_size=32, stride=32, max_val_patches=1, workers=1)
    eval_dirs = {"set": folder, "set@noise5": folder}
    prepare(folder, eval_dirs, tmp_path / "prepared", seed=3, scale=4, settings=settings)
    conv = convention(4)
    prepared = pairs_from_prepared(tmp_path / "prepared/eval/set@noise5", conv, 10**6, "noise5")
    from_folder = pairs_from_hr_folder(folder, conv, 10**6, "noise5")
    for pair, again in zip(prepared, from_folder, strict=True):
        assert np.array_equal(pair.lr_img, again.lr_img)
        clean = read_image(tmp_path / "prepared/eval/set/lr" / f"{pair.name}.png", max_pixels=10**6)
        assert np.array_equal(clean, imresize_uint8(pair.hr_img, 1 / 4))
        assert 4 < _rms(pair.lr_img, clean) < 6  # σ = 5, clipped rarely

    main(["eval", "--model", "bicubic", "--data", str(folder), "--json"])
    main(["eval", "--model", "bicubic", "--data", str(folder), "--degrade", "noise5", "--json"])
    clean_scores, noisy_scores = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    # Bicubic ×4 passes about a quarter of the noise's variance (25) on to the output.
    assert noisy_scores["degrade"] == "noise5" and 3 < noisy_scores["mse"] - clean_scores["mse"] < 12


def test_srgan_eval_refuses_a_bad_degrade_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["eval", "--model", "bicubic", "--data", str(tmp_path), "--degrade", "jpeg500"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "srgan eval: error: argument --degrade: 'jpeg500': jpeg takes 1-95"
    )
    with pytest.raises(SystemExit) as exited:
        main(["eval", "--model", "bicubic", "--data", str(tmp_path), "--degrade", "jpeg50", "--no-reference"])
    assert exited.value.code != 0
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --degrade applies to the LR made from HR images; with --no-reference there are none"
    ]
