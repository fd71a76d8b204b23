"""`srgan eval`: distortion and NIQE on HR folders, NIQE alone on LR photos (`--no-reference`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from srgan.cli import main
from srgan.core.metrics import convention
from srgan.core.runtime import Runtime
from srgan.data.imresize import bicubic_upscale, imresize_uint8, modcrop
from srgan.evaluation.niqe import niqe
from srgan.evaluation.scores import Measured, measure
from srgan.inference.tiling import upscale_image
from srgan.models.checkpoint import generator_config, save_generator
from srgan.models.networks import build_generator


def _save(folder: Path, images: dict[str, np.ndarray]) -> Path:
    folder.mkdir()
    for name, image in images.items():
        Image.fromarray(image).save(folder / f"{name}.png")
    return folder


def _json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    main(argv)
    (line,) = capsys.readouterr().out.splitlines()
    return json.loads(line)


def bicubic_scores(hr: np.ndarray) -> Measured:
    """What `srgan eval --model bicubic` measures on one HR image: ×4 under the matlab convention."""
    return measure(bicubic_upscale(imresize_uint8(modcrop(hr, 4), 0.25), 4), modcrop(hr, 4), convention(4))


def test_eval_reports_distortion_and_niqe_of_bicubic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hr = {"astronaut": skimage.data.astronaut()[:256, :300], "coffee": skimage.data.coffee()[:200, :260]}
    folder = _save(tmp_path / "hr", hr)
    got = _json(capsys, ["eval", "--model", "bicubic", "--data", str(folder), "--json"])
    assert set(got) == {"model", "psnr", "ssim", "mse", "lpips", "niqe", "images", "convention", "degrade"}
    expected = [bicubic_scores(img) for img in (hr["astronaut"], hr["coffee"])]
    assert got["images"] == 2 and got["convention"] == "matlab" and got["degrade"] is None
    for key in ("psnr", "lpips", "niqe"):
        assert got[key] == pytest.approx(np.mean([s[key] for s in expected]), abs=1e-9)
    assert 0.1 < got["lpips"] < 0.7  # bicubic ×4: blurred, well away from 0
    assert 3 < got["niqe"] < 15


def _strict_json(text: str) -> dict:
    """Parse as strict JSON: Python's `json` would accept the non-standard Infinity and NaN."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_a_flat_image_is_left_out_of_psnr_and_niqe_only_and_the_json_stays_strict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A flat image upscales exactly (PSNR infinite) and has no texture for NIQE: it is named, left
    out of those two means, and counts in the others; the JSON has no Infinity (not JSON). With no
    image left for a metric, its mean is null."""
    textured = skimage.data.astronaut()[:256, :300]
    flat = np.full((256, 300, 3), 128, dtype=np.uint8)
    folder = _save(tmp_path / "hr", {"astronaut": textured, "flat": flat})
    main(["eval", "--model", "bicubic", "--data", str(folder), "--json"])
    out, err = capsys.readouterr()
    got = _strict_json(out)
    assert err.splitlines() == [
        "warning: flat: PSNR infinite (the output equals HR exactly); too flat for NIQE (fewer than two textured "
        "96×96 blocks); left out of those means, its other metrics count"
    ]
    scores = {"astronaut": bicubic_scores(textured), "flat": bicubic_scores(flat)}
    assert scores["flat"]["psnr"] == np.inf and scores["flat"]["mse"] == 0  # a flat image upscales exactly
    assert got["images"] == 2
    for key in ("psnr", "niqe"):  # the textured image's alone
        assert got[key] == pytest.approx(scores["astronaut"][key], abs=1e-9)
    for key in ("mse", "ssim", "lpips"):
        assert got[key] == pytest.approx((scores["astronaut"][key] + scores["flat"][key]) / 2, abs=1e-9)

    (folder / "astronaut.png").unlink()
    main(["eval", "--model", "bicubic", "--data", str(folder), "--json"])
    alone = _strict_json(capsys.readouterr().out)
    assert alone["psnr"] is None and alone["niqe"] is None and alone["images"] == 1
    assert (alone["mse"], alone["ssim"]) == (0, 1)
    main(["eval", "--model", "bicubic", "--data", str(folder)])
    assert "PSNR (dB) ↑ n/a" in capsys.readouterr().out


def test_a_nearly_flat_image_is_too_flat_for_niqe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Grey 127.5 plus noise of 0.5 grey levels (127s and 128s: a spread under one grey level, NIQE's
    normalisation constant) has no statistics for NIQE: its NIQE, 33 after bicubic (717 as it is),
    measured noise over that constant and alone moved the folder's mean from 8.0 to 20.4. It is named
    and left out of the NIQE mean; its other metrics count."""
    textured = skimage.data.astronaut()[:256, :300]
    near_flat = np.round(127.5 + np.random.default_rng(0).normal(0, 0.5, (256, 300, 3))).astype(np.uint8)
    assert near_flat.std() < 1
    folder = _save(tmp_path / "hr", {"astronaut": textured, "near_flat": near_flat})
    main(["eval", "--model", "bicubic", "--data", str(folder), "--json"])
    out, err = capsys.readouterr()
    got = _strict_json(out)
    assert err.splitlines() == [
        "warning: near_flat: too flat for NIQE (fewer than two textured 96×96 blocks); left out of that mean, "
        "its other metrics count"
    ]
    scores = {"astronaut": bicubic_scores(textured), "near_flat": bicubic_scores(near_flat)}
    assert got["niqe"] == pytest.approx(scores["astronaut"]["niqe"], abs=1e-9)
    assert got["psnr"] == pytest.approx((scores["astronaut"]["psnr"] + scores["near_flat"]["psnr"]) / 2, abs=1e-9)

    # As an LR photo (--no-reference), its ×4 output has no other metric to count.
    lr = _save(tmp_path / "lr", {"astronaut": textured[:64, :75], "near_flat": near_flat[:64, :75]})
    main(["eval", "--model", "bicubic", "--data", str(lr), "--no-reference", "--json"])
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "warning: near_flat.png: too flat for NIQE (fewer than two textured 96×96 blocks); left out of that mean"
    ]
    assert _strict_json(out)["niqe"] == pytest.approx(niqe(bicubic_upscale(textured[:64, :75], 4), crop_border=4))


def test_no_reference_scores_the_upscaled_photos_niqe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """LR photos alone: each is upscaled by the model (here a small random generator and bicubic)
    and the mean NIQE of the outputs is reported, with the scale's border crop."""
    lr = {"a": imresize_uint8(skimage.data.astronaut(), 0.25), "c": imresize_uint8(skimage.data.chelsea(), 0.25)}
    folder = _save(tmp_path / "lr", lr)
    torch.manual_seed(0)
    config = generator_config(4, 2, 8, True)
    gen = build_generator(config).eval()
    model = tmp_path / "gen.pt"
    save_generator(model, gen, config)

    got = _json(
        capsys,
        ["eval", "--model", str(model), "--data", str(folder), "--no-reference", "--json", "--precision", "fp32"],
    )
    rt = Runtime(torch.device("cpu"), "fp32")
    expected = np.mean([niqe(upscale_image(gen, img, rt), crop_border=4) for img in (lr["a"], lr["c"])])
    assert got == {"model": str(model), "niqe": pytest.approx(expected, abs=1e-9), "images": 2, "crop_border": 4}

    bicubic = _json(capsys, ["eval", "--model", "bicubic", "--data", str(folder), "--no-reference", "--json"])
    assert bicubic["niqe"] == pytest.approx(
        np.mean([niqe(bicubic_upscale(img, 4), crop_border=4) for img in lr.values()])
    )
    assert bicubic["niqe"] != pytest.approx(got["niqe"], abs=1e-3)


@pytest.mark.parametrize("no_reference", [False, True])
def test_images_too_small_to_measure_are_named_and_skipped_and_the_rest_measured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_reference: bool
) -> None:
    """The smallest image measured: 200x104 px HR (26x50 px LR at x4 for --no-reference), either way
    round: NIQE's two 96-px blocks after the 4-px border crop. 2x2 to 16x16 images used to abort
    the whole eval (a traceback for 2x2)."""
    coffee = skimage.data.coffee()
    smallest = (26, 50) if no_reference else (104, 200)
    images = {f"tiny{side}": coffee[:side, :side] for side in (2, 3, 9, 16)}
    images |= {
        "smallest": coffee[: smallest[0], : smallest[1]],
        "rotated": coffee[: smallest[1], : smallest[0]],
        "one_short": coffee[: smallest[0] - 1, : smallest[1]],
    }
    folder = _save(tmp_path / "data", images)
    argv = ["eval", "--model", "bicubic", "--data", str(folder), "--json"] + ["--no-reference"] * no_reference
    main(argv)
    out, err = capsys.readouterr()
    got = json.loads(out)
    assert got["images"] == 2 and 0 < got["niqe"] < 30
    need = f"{smallest[1]}×{smallest[0]}"
    sizes = {
        "tiny2": "2×2",
        "tiny3": "3×3",
        "tiny9": "9×9",
        "tiny16": "16×16",
        "one_short": f"{smallest[1]}×{smallest[0] - 1}",
    }
    assert sorted(err.splitlines()) == sorted(
        f"warning: {folder / name}.png: too small to measure ({size} px; srgan eval needs at least {need} px, "
        "either way round); skipped"
        for name, size in sizes.items()
    )

    for name in ("smallest", "rotated"):
        (folder / f"{name}.png").unlink()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert (
        capsys.readouterr().err.splitlines()[-1]
        == f"error: {folder}: none of its 5 images can be measured (see the warnings above)"
    )


def test_the_text_line_counts_one_image_in_the_singular(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _save(tmp_path / "hr", {"astronaut": skimage.data.astronaut()[:200, :200]})
    main(["eval", "--model", "bicubic", "--data", str(folder)])
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"bicubic on {folder} (1 image, ×4, matlab convention): MSE ↓ ")
    assert line.endswith("(↑ higher is better, ↓ lower)") and "LPIPS ↓" in line and "NIQE ↓" in line
