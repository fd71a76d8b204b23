"""MATLAB-compatible bicubic imresize: hand-derived values, padding, antialiasing, shapes, rounding.

The literature bicubic baselines (the strongest check, on real images) are in test_metrics.py.
Keys cubic with a = -0.5, the values used below:
    cubic(0.25) = 0.8671875, cubic(0.75) = 0.2265625, cubic(1.25) = -0.0703125,
    cubic(1.75) = -0.0234375, cubic(|x| >= 2) = 0 (all exact in binary floating point).
"""

from __future__ import annotations

import numpy as np
import pytest

from srgan.core.errors import SrganError
from srgan.data.imresize import bicubic_upscale, imresize, imresize_uint8, modcrop


def test_upscale_x2_of_a_ramp_matches_hand_computation() -> None:
    # MATLAB imresize([1 2 3 4], 2, 'bicubic') along a row. Output i (1-based) samples input
    # coordinate u = i/2 + 1/4; taps at distance 0.25 and 0.75 on the near side, 1.25 and 1.75
    # on the far side. Inside, the kernel reproduces the ramp (value = u); at the borders the
    # symmetric padding (edge pixel repeated: 2 1 | 1 2 3 4 | 4 3) bends it, e.g.
    # out[0] = (0.2265625 + 0.8671875) * 1 - (0.0703125 + 0.0234375) * 2 = 0.90625.
    expected = [0.90625, 1.1796875, 1.7265625, 2.25, 2.75, 3.2734375, 3.8203125, 4.09375]
    row = np.array([[1.0, 2.0, 3.0, 4.0]])
    out = imresize(row, 2)
    assert out.shape == (2, 8)
    np.testing.assert_allclose(out, [expected, expected], rtol=0, atol=1e-12)


def test_downscale_uses_the_antialiased_kernel_and_symmetric_padding() -> None:
    # Downscaling by 2 stretches the kernel to 8 input pixels: output i samples u = 2i - 1/2,
    # with weights cubic(d/2)/2 for d = ±0.5, ±1.5, ±2.5, ±3.5 (they sum to exactly 1).
    # Output 0 (u = 1.5) reaches 3 pixels before the first one: symmetric padding gives
    # x[2], x[1], x[0] there (the edge pixel repeated), then x[0] .. x[4].
    half = np.array([-0.0234375, -0.0703125, 0.2265625, 0.8671875]) / 2
    weights = np.concatenate([half, half[::-1]])
    x = np.array([3.0, 7.0, 1.0, 8.0, 2.0, 9.0, 4.0, 6.0])
    padded = np.pad(x, 3, mode="symmetric")  # numpy's "symmetric" repeats the edge, like MATLAB
    expected = [weights @ padded[2 * i : 2 * i + 8] for i in range(4)]
    np.testing.assert_allclose(imresize(x[None, :], 0.5)[0], expected, rtol=0, atol=1e-12)
    # Without antialiasing (plain 4-tap cubic) output 0 would be 1.09375 * 3 - 0.09375 * 7 = 2.625.
    assert abs(expected[0] - 2.625) > 0.1


def test_matches_the_documented_example_of_bicubic_pytorch() -> None:
    # The example in bicubic-pytorch 0.1.2.1's core.py docstring (the EDSR authors' port, stated
    # to equal MATLAB imresize): arange(16) as 4x4 resized to 3x3, i.e. scale 0.75, antialiased.
    # The docstring prints 6.1505 at [1, 0], a typo: the image is 4 * row + col and the resize is
    # separable, so [1, 0] = 4 * 1.5 + [0, 0] / 5 = 6.1501, which the library itself returns.
    expected = [[0.7506, 2.1004, 3.4503], [6.1501, 7.5000, 8.8499], [11.5497, 12.8996, 14.2494]]
    np.testing.assert_allclose(imresize(np.arange(16.0).reshape(4, 4), 0.75), expected, atol=5e-5)


def test_symmetric_padding_equals_resizing_a_padded_image() -> None:
    # Padding the input by p pixels (symmetric) and resizing moves the output by p*scale pixels;
    # the inner part must equal resizing the unpadded image, whose borders are mirrored inside.
    # Reflect padding without the repeated edge (PyTorch's) or edge replication would differ.
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 255, size=(24, 20, 3))
    padded = np.pad(image, ((12, 12), (12, 12), (0, 0)), mode="symmetric")
    np.testing.assert_allclose(imresize(padded, 0.25)[3:-3, 3:-3], imresize(image, 0.25), atol=1e-9)
    np.testing.assert_allclose(imresize(padded, 4)[48:-48, 48:-48], imresize(image, 4), atol=1e-9)


@pytest.mark.parametrize("scale", [1 / 4, 1 / 3, 4, 3])
def test_constant_image_stays_constant(scale: float) -> None:
    image = np.full((18, 15, 3), 137, dtype=np.uint8)
    np.testing.assert_allclose(imresize(image, scale), 137.0, rtol=0, atol=1e-9)
    assert (imresize_uint8(image, scale) == 137).all()


@pytest.mark.parametrize(
    ("shape", "scale", "expected"),
    [
        ((256, 256, 3), 1 / 4, (64, 64, 3)),
        ((250, 171, 3), 1 / 4, (63, 43, 3)),  # MATLAB: ceil(scale * size)
        ((300, 200), 1 / 3, (100, 67)),
        ((64, 48, 3), 4, (256, 192, 3)),
        ((7, 5), 3, (21, 15)),
    ],
)
def test_output_shapes(shape: tuple[int, ...], scale: float, expected: tuple[int, ...]) -> None:
    image = np.zeros(shape, dtype=np.uint8)
    assert imresize(image, scale).shape == expected
    assert imresize(image, scale).dtype == np.float64
    assert imresize_uint8(image, scale).shape == expected


def test_uint8_rounds_half_away_from_zero() -> None:
    # A row 0, 2, 4, ..., 14 upscaled x2: inside, outputs are exactly 2 * (u - 1) with
    # u = i/2 + 1/4, i.e. 2.5, 3.5, 4.5, 5.5 at 0-based outputs 3..6. MATLAB's uint8 cast
    # gives 3, 4, 5, 6; numpy's round-half-to-even would give 2, 4, 4, 6.
    row = (2 * np.arange(8)).astype(np.uint8)[None, :]
    np.testing.assert_allclose(imresize(row, 2)[0, 3:7], [2.5, 3.5, 4.5, 5.5], atol=1e-12)
    assert imresize_uint8(row, 2)[0, 3:7].tolist() == [3, 4, 5, 6]


def test_uint8_saturates_overshoot() -> None:
    # Bicubic rings past a hard edge: the float result leaves [0, 255], the uint8 one is clipped.
    image = np.zeros((8, 8), dtype=np.uint8)
    image[:, 4:] = 255
    floats = imresize(image, 4)
    assert floats.min() < -1 and floats.max() > 256
    out = imresize_uint8(image, 4)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert bicubic_upscale(image, 4).tolist() == out.tolist()


def test_uint8_rounds_after_each_pass_like_matlab() -> None:
    # MATLAB keeps uint8 between its height and width passes, so the intermediate image is
    # rounded and saturated too. Built here from the float imresize of single columns and rows:
    # upscaling x2 a 1-px-wide dimension copies it exactly (the weights are multiples of 1/128
    # summing to 1), so imresize(column, 2)[:, 0] is just the height pass.
    def matlab_uint8(values: np.ndarray) -> np.ndarray:
        clipped = np.clip(values, 0, 255)
        return np.floor(clipped + 0.5)  # non-negative: half away from zero

    image = np.random.default_rng(0).integers(0, 256, size=(12, 10), dtype=np.uint8)
    height_pass = np.stack([imresize(image[:, j : j + 1], 2)[:, 0] for j in range(10)], axis=1)
    height_pass = matlab_uint8(height_pass)  # (24, 10)
    expected = matlab_uint8(np.stack([imresize(row[None, :], 2)[0] for row in height_pass]))
    np.testing.assert_array_equal(imresize_uint8(image, 2), expected)
    # Rounding once at the end differs: the test can tell the two apart.
    assert (matlab_uint8(imresize(image, 2)) != expected).any()


def test_modcrop_keeps_top_left() -> None:
    image = np.arange(10 * 7 * 3).reshape(10, 7, 3)
    cropped = modcrop(image, 4)
    assert cropped.shape == (8, 4, 3)
    np.testing.assert_array_equal(cropped, image[:8, :4])
    assert modcrop(np.zeros((12, 8)), 4).shape == (12, 8)


def test_rejects_what_it_cannot_resize() -> None:
    with pytest.raises(SrganError, match="uint8"):
        imresize_uint8(np.zeros((4, 4)), 2)
    with pytest.raises(SrganError, match="shape"):
        imresize(np.zeros((2, 4, 4, 3)), 2)
    with pytest.raises(SrganError, match="positive"):
        imresize(np.zeros((4, 4)), 0)
