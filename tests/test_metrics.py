"""MSE / PSNR / SSIM conventions: closed-form values, BT.601 by hand, skimage, the literature baselines."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import skimage.filters
from PIL import Image
from skimage.metrics import structural_similarity

from srgan.cli import main
from srgan.core.errors import SrganError
from srgan.core.metrics import Convention, convention, mse, psnr, rgb_to_y, ssim
from srgan.data.imresize import imresize_uint8, modcrop
from srgan.evaluation.niqe import FlatImageError, niqe
from srgan.evaluation.scores import METRIC_NAMES, METRICS, Measured, Scores, average, measure
from srgan.models.lpips import lpips

BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks"


def _random_rgb(seed: int, shape: tuple[int, ...] = (40, 36, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


@pytest.mark.parametrize(("error", "expected_psnr"), [(1, 48.1308036087), (10, 28.1308036087)])
def test_psnr_of_a_constant_error(error: int, expected_psnr: float) -> None:
    # 10 log10(255^2 / error^2): 48.1308 dB for an error of 1, 20 dB less for an error of 10.
    hr = np.full((32, 32), 100, dtype=np.uint8)
    sr = hr + np.uint8(error)
    assert mse(sr, hr, crop_border=0, y_channel=True) == error**2
    assert psnr(sr, hr, crop_border=0, y_channel=True) == pytest.approx(expected_psnr, abs=1e-9)


def test_mse_over_rgb_channels_is_exact() -> None:
    hr = _random_rgb(0).clip(0, 200)
    sr = hr + np.array([1, 2, 3], dtype=np.uint8)  # per-channel errors 1, 2, 3
    assert mse(sr, hr, crop_border=0, y_channel=False) == pytest.approx(14 / 3, abs=1e-12)
    assert psnr(sr, hr, crop_border=4, y_channel=False) == pytest.approx(10 * math.log10(255**2 * 3 / 14), abs=1e-9)


def test_bt601_y_by_hand() -> None:
    # (100, 150, 200): 16 + (65.481 * 100 + 128.553 * 150 + 24.966 * 200) / 255
    #                = 16 + 30824.25 / 255 = 136.8794117647...; MATLAB's uint8 rgb2ycbcr gives 137.
    pixels = np.array([[[100, 150, 200], [255, 0, 0], [0, 255, 0], [255, 255, 255], [0, 0, 0]]], dtype=np.uint8)
    exact = rgb_to_y(pixels, round_y=False)[0]
    np.testing.assert_allclose(exact, [136.87941176470588, 81.481, 144.553, 235.0, 16.0], rtol=0, atol=1e-9)
    assert rgb_to_y(pixels, round_y=True)[0].tolist() == [137.0, 81.0, 145.0, 235.0, 16.0]


def test_rounding_y_changes_the_error() -> None:
    # Grey 100 -> Y 101.882 -> 102 and grey 101 -> Y 102.741 -> 103: rounded, the error is 1;
    # unrounded it is 219/255 (the Y gain of a grey step).
    hr = np.full((16, 16, 3), 100, dtype=np.uint8)
    sr = hr + np.uint8(1)
    assert mse(sr, hr, crop_border=0, y_channel=True, round_y=True) == 1.0
    assert mse(sr, hr, crop_border=0, y_channel=True, round_y=False) == pytest.approx((219 / 255) ** 2, abs=1e-12)


def test_grayscale_is_measured_on_its_own_values() -> None:
    # No Y conversion for grayscale (MATLAB skips rgb2ycbcr when size(im, 3) == 1): an error of
    # 10 grey levels is an MSE of 100, where converting grey to Y would give (10 * 219/255)^2.
    hr = np.full((16, 16), 50, dtype=np.uint8)
    sr = hr + np.uint8(10)
    assert mse(sr, hr, crop_border=0, y_channel=True) == 100.0
    assert mse(sr[:, :, None], hr[:, :, None], crop_border=0, y_channel=True) == 100.0


def test_ssim_of_identical_images_is_one() -> None:
    image = _random_rgb(1)
    assert ssim(image, image, crop_border=4, y_channel=True) == 1.0
    assert ssim(image, image, crop_border=0, y_channel=False) == 1.0
    assert math.isinf(psnr(image, image, crop_border=0, y_channel=True))


def test_ssim_agrees_with_skimage() -> None:
    # skimage with gaussian_weights=True, sigma=1.5 (truncate 3.5) filters with an 11-tap
    # Gaussian, radius 5, in 'same' mode (reflect padding), then averages the SSIM map after
    # cropping pad = (11 - 1) // 2 = 5 px per side (3 px is only for its default 7x7 window).
    # The 5-px-cropped 'same' map is exactly the 'valid' map of MATLAB's ssim_index (no value in
    # it sees the padding), so skimage's mean and ours are the same number, not just close.
    a = np.random.default_rng(2).uniform(0, 255, size=(48, 40))
    b = np.clip(a + np.random.default_rng(3).normal(0, 60, size=a.shape), 0, 255)
    expected, ssim_map = structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, full=True
    )
    assert ssim(b, a, crop_border=0, y_channel=True) == pytest.approx(expected, abs=1e-10)
    assert ssim_map[5:-5, 5:-5].mean() == pytest.approx(expected, abs=1e-12)
    assert 0.2 < expected < 0.9  # a pair that tests something: neither identical nor unrelated


def test_border_crop_removes_border_errors() -> None:
    hr = _random_rgb(4)
    sr = hr.copy()
    sr[:4] = 255 - sr[:4]  # errors only in the 4-px border
    sr[:, -4:] = 0
    assert math.isinf(psnr(sr, hr, crop_border=4, y_channel=True))
    assert ssim(sr, hr, crop_border=4, y_channel=True) == 1.0
    assert psnr(sr, hr, crop_border=3, y_channel=True) < 30
    assert ssim(sr, hr, crop_border=0, y_channel=True) < 1.0


def test_conventions_are_named_and_explicit() -> None:
    matlab = convention(4)
    assert matlab == Convention("matlab", y_channel=True, round_y=True, crop_border=4)
    assert convention(3, "rgb") == Convention("rgb", y_channel=False, round_y=False, crop_border=3)
    assert matlab.describe() == "matlab: BT.601 Y rounded to integers (grayscale as is), 4 px border crop"
    with pytest.raises(SrganError, match="unknown metric convention 'ycbcr'"):
        convention(4, "ycbcr")


def test_measure_and_average() -> None:
    hr = _random_rgb(5, (104, 200, 3))  # NIQE needs two 96-px blocks after the 4-px border crop
    sr = np.clip(hr.astype(int) + np.random.default_rng(6).integers(-8, 9, size=hr.shape), 0, 255).astype(np.uint8)
    scores = measure(sr, hr, convention(4))
    assert scores.convention == "matlab" and scores.images == 1
    assert list(scores.values) == list(METRIC_NAMES)  # every metric of the table, in its order
    assert scores["mse"] == mse(sr, hr, crop_border=4, y_channel=True)
    assert scores["psnr"] == pytest.approx(10 * math.log10(255**2 / scores["mse"]), abs=1e-12)
    assert scores["ssim"] == ssim(sr, hr, crop_border=4, y_channel=True)
    assert scores["niqe"] == niqe(sr, crop_border=4)
    assert scores["lpips"] == lpips(sr[4:-4, 4:-4], hr[4:-4, 4:-4], crop_border=0) > 0
    assert measure(sr, hr, convention(4, "rgb"))["mse"] != scores["mse"]
    # The papers average per-image PSNR, not the PSNR of the mean MSE.
    first = Scores({"psnr": 30.0, "ssim": 0.8, "mse": 65.0, "lpips": 0.2, "niqe": 4.0}, 1, "matlab")
    second = Scores({"psnr": 40.0, "ssim": 0.9, "mse": 6.5, "lpips": 0.1, "niqe": 5.0}, 3, "matlab")
    mean = average([first, second])
    assert (mean.images, mean.convention) == (4, "matlab")
    assert mean.values == pytest.approx({"psnr": 37.5, "ssim": 0.875, "mse": 21.125, "lpips": 0.125, "niqe": 4.75})
    with pytest.raises(SrganError, match="different conventions"):
        average([first, Scores(first.values, 1, "rgb")])
    with pytest.raises(SrganError, match="shape"):
        measure(sr[:-1], hr, convention(4))


# Bicubic x4, published with MATLAB (VDSR, EDSR, RCAN tables): PSNR (dB) and SSIM on Y.
LITERATURE_BICUBIC_X4 = {"Set5": (28.42, 0.8104), "Set14": (26.00, 0.7027), "BSD100": (25.96, 0.6675)}


@pytest.mark.parametrize("name", sorted(LITERATURE_BICUBIC_X4))
def test_bicubic_baselines_match_literature(name: str) -> None:
    folder = BENCHMARKS / name
    if not folder.is_dir():
        pytest.skip(f"benchmark images not present at {folder}")
    # PSNR and SSIM as the evaluate stage computes them (its METRICS entries), without the LPIPS
    # and NIQE that `measure` adds and this comparison does not use.
    distortion = [metric for metric in METRICS if metric.name in ("psnr", "ssim")]
    conv = convention(4)
    results = []
    for path in sorted(folder.glob("*.png")):
        with Image.open(path) as img:
            assert img.mode in ("RGB", "L"), f"{path.name}: mode {img.mode}"
            hr_img = modcrop(np.asarray(img), 4)  # (H, W, 3) RGB or (H, W) grey, uint8
        lr_img = imresize_uint8(hr_img, 1 / 4)
        sr_img = imresize_uint8(lr_img, 4)
        measured = Measured(sr_img, hr_img, conv)
        results.append(Scores({metric.name: metric.compute(measured) for metric in distortion}, 1, conv.name))
    mean = average(results)
    expected_psnr, expected_ssim = LITERATURE_BICUBIC_X4[name]
    assert mean.images == {"Set5": 5, "Set14": 14, "BSD100": 100}[name]
    assert abs(mean["psnr"] - expected_psnr) <= 0.01, f"{name}: PSNR {mean['psnr']:.4f}"
    assert abs(mean["ssim"] - expected_ssim) <= 0.001, f"{name}: SSIM {mean['ssim']:.4f}"


# BasicSR's own bicubic x4 figures (unrounded Y; LR and bicubic resized in float, rounded once).
BASICSR_BICUBIC_X4 = {"Set5": (28.4314, 0.8113), "Set14": (25.9973, 0.7031), "BSD100": (25.9634, 0.6682)}


def eval_bicubic(name: str, conv: str, capsys: pytest.CaptureFixture[str]) -> dict[str, float]:
    """`srgan eval --model bicubic --json` of one benchmark set: the path users take."""
    folder = BENCHMARKS / name
    if not folder.is_dir():
        pytest.skip(f"benchmark images not present at {folder}")
    main(["eval", "--model", "bicubic", "--data", str(folder), "--convention", conv, "--json"])
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name", sorted(BASICSR_BICUBIC_X4))
def test_the_basicsr_convention_gives_basicsrs_bicubic_figures(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    got = eval_bicubic(name, "basicsr", capsys)
    expected_psnr, expected_ssim = BASICSR_BICUBIC_X4[name]
    assert got["convention"] == "basicsr"
    assert abs(got["psnr"] - expected_psnr) <= 0.001, got
    assert abs(got["ssim"] - expected_ssim) <= 0.0005, got


@pytest.mark.parametrize("name", ["Set5", "Set14"])
def test_the_matlab_convention_is_measurably_apart_from_basicsrs(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Rounded Y and uint8 resizing (matlab) against unrounded Y and float resizing (basicsr), on
    the same images. (BSD100's hundred images would add a minute of a busy core and no new case.)"""
    gap = eval_bicubic(name, "basicsr", capsys)["psnr"] - eval_bicubic(name, "matlab", capsys)["psnr"]
    assert 0.003 < gap < 0.03


# NIQE


def test_niqe_of_baboon_matches_matlab() -> None:
    # MATLAB R2021a on Set14 baboon, Y channel, no crop: 5.72957338 (as BasicSR 1.4.2 reports it).
    path = BENCHMARKS / "Set14" / "baboon.png"
    if not path.is_file():
        pytest.skip(f"benchmark image not present at {path}")
    with Image.open(path) as img:
        assert img.mode == "RGB", f"{path.name}: mode {img.mode}"
        image = np.asarray(img)
    value = niqe(image, crop_border=0)
    assert value == pytest.approx(5.7296, abs=1e-3)
    # Tighter: counting the rounding noise of its one flat patch as samples would be 4e-4 off.
    assert value == pytest.approx(5.72957338, abs=1e-5)


# BasicSR 1.4.2's own `calculate_niqe(bgr_image, crop_border)` (its default Y path), run once from
# the PyPI sdist (basicsr/metrics/niqe.py, utils/matlab_functions.py, utils/color_util.py; the
# registry stubbed) on photos that ship with scikit-image. BasicSR computes in float32 (Y, filter
# output, its torch imresize); on these photos that moves it by under 4e-5, but on others
# (astronaut, rocket, page) float32 noise in flat areas is counted as samples and moves it by
# 1e-4 to 1e-2, so those are checked against the float64 run below instead.
BASICSR_NIQE = {
    ("coffee", 0): 4.115241615372862,
    ("coffee", 4): 4.079406018889277,
    ("chelsea", 0): 2.6255243812915023,
    ("chelsea", 4): 2.6893133463072423,
    ("camera", 0): 3.096206619345783,
}


@pytest.mark.parametrize(("name", "crop_border"), sorted(BASICSR_NIQE))
def test_niqe_agrees_with_basicsr(name: str, crop_border: int) -> None:
    image = getattr(skimage.data, name)()
    assert niqe(image, crop_border=crop_border) == pytest.approx(BASICSR_NIQE[name, crop_border], abs=1e-4)


# The same BasicSR code run in float64 (its imresize with double tensors, a float64 Y in, and MSCN
# values within 1e-8 of 0 set to 0, as ours): it agrees with ours to 5e-13 on all 12 scikit-image
# photos tried and baboon, so the algorithm is the same down to every grid choice of the AGGD fit.
BASICSR_FLOAT64_NIQE = {
    ("astronaut", 0): 3.0646096408899384,  # flat black areas
    ("camera", 4): 3.046726804122371,  # grayscale
    ("page", 0): 8.79941534925193,  # grayscale 191 x 384: a single row of 4 blocks
}


@pytest.mark.parametrize(("name", "crop_border"), sorted(BASICSR_FLOAT64_NIQE))
def test_niqe_agrees_with_basicsr_in_float64(name: str, crop_border: int) -> None:
    image = getattr(skimage.data, name)()
    assert niqe(image, crop_border=crop_border) == pytest.approx(BASICSR_FLOAT64_NIQE[name, crop_border], abs=1e-9)


def test_niqe_rises_with_blur() -> None:
    # astronaut: 3.06 sharp, 5.43 after a sigma-1 Gaussian blur, 7.24 after sigma 2.
    image = skimage.data.astronaut()
    values = [niqe(image, crop_border=0)]
    for sigma in (1, 2):
        blurred = skimage.filters.gaussian(image, sigma=sigma, channel_axis=-1, preserve_range=True)
        values.append(niqe(np.round(blurred).astype(np.uint8), crop_border=0))
    assert values[1] > values[0] + 1.5 and values[2] > values[1] + 1.5, values


def test_niqe_crops_the_border() -> None:
    image = skimage.data.astronaut()
    cropped = niqe(image, crop_border=4)
    assert cropped == niqe(image[4:-4, 4:-4], crop_border=0)
    assert abs(cropped - niqe(image, crop_border=0)) > 0.05  # 2.991 vs 3.065
    scribbled = image.copy()
    scribbled[:4] = 255
    scribbled[:, -4:] = _random_rgb(7, (512, 4, 3))
    assert niqe(scribbled, crop_border=4) == cropped  # the border is not seen at all


def test_niqe_needs_two_blocks() -> None:
    noise = _random_rgb(8, (200, 200, 3))
    assert np.isfinite(niqe(noise[:96, :192], crop_border=0))  # exactly two blocks
    assert np.isfinite(niqe(noise[:192, :96], crop_border=0))
    with pytest.raises(SrganError, match=r"at least two 96x96 blocks .*got shape \(96, 191, 3\)$"):
        niqe(noise[:96, :191], crop_border=0)
    assert np.isfinite(niqe(noise[:100, :196, 0], crop_border=2))  # (96, 192) after the crop
    with pytest.raises(SrganError, match=r"got shape \(100, 196\), \(94, 190\) after cropping 3 px per side$"):
        niqe(noise[:100, :196, 0], crop_border=3)
    with pytest.raises(SrganError, match="at least two textured 96x96 blocks, got 0 of 4"):
        niqe(np.full((192, 192), 7, dtype=np.uint8), crop_border=0)


def test_niqe_refuses_a_nearly_flat_image_and_measures_photos_with_flat_parts_as_before() -> None:
    # 127s and 128s (grey 127.5 plus noise of 0.5 grey levels; std 0.5, under the 8-bit step and the
    # MSCN constant C = 1): their NIQE, 704.6, measured noise over C, as if the worst image ever seen.
    rng = np.random.default_rng(0)
    near_flat = np.round(127.5 + rng.normal(0, 0.5, (256, 300))).astype(np.uint8)
    with pytest.raises(FlatImageError, match=r"at least two textured 96x96 blocks, got 0 of 6 .*\(256, 300\)"):
        niqe(near_flat, crop_border=0)
    with pytest.raises(FlatImageError, match="got 0 of 6"):  # as RGB: its Y is 125s and 126s
        niqe(np.repeat(near_flat[:, :, None], 3, axis=2), crop_border=0)
    noisy = np.round(127.5 + rng.normal(0, 3, (256, 300))).astype(np.uint8)  # std 3: measured
    assert niqe(noisy, crop_border=0) == pytest.approx(16.849220072722996, abs=1e-9)
    # The retina's black surround: 6 of these 24 blocks are near-flat (1 flat); measured on all, as before.
    assert niqe(skimage.data.retina()[:384, :576], crop_border=0) == pytest.approx(6.7634897931296685, abs=1e-12)


def test_niqe_grey_rgb_is_measured_on_its_y() -> None:
    # R = G = B = v has Y = 16 + 219 v / 255 (rounded; never a tie for integer v), not v: the RGB
    # image scores like the grey image of its Y values (3.1558), not like the grey image of v
    # (3.0962), which is measured on its own values as MATLAB does for grayscale.
    grey = skimage.data.camera()
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    y = np.floor(16 + grey * (219 / 255) + 0.5)
    assert niqe(rgb, crop_border=0) == pytest.approx(niqe(y, crop_border=0), abs=1e-12)
    assert abs(niqe(rgb, crop_border=0) - niqe(grey, crop_border=0)) > 0.03
    assert niqe(grey[:, :, None], crop_border=0) == niqe(grey, crop_border=0)
    assert niqe(grey.astype(np.float32), crop_border=0) == niqe(grey, crop_border=0)
