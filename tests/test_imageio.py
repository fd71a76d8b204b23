"""read_image on the files people actually have; every file is generated here with Pillow."""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srgan.core.errors import SrganError
from srgan.data.imageio import ImageReadError, decode_bytes, list_images, read_image, to_picture, write_png

BOUND = 10_000_000


@pytest.fixture(autouse=True)
def _restore_pillow_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    # read_image sets Pillow's process-wide guard; keep other tests' Pillow as they expect it.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)


def _rgb(height: int = 20, width: int = 30, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _reason(path: Path, max_pixels: int = BOUND) -> str:
    with pytest.raises(ImageReadError) as info:
        read_image(path, max_pixels=max_pixels)
    assert str(path) in str(info.value)
    assert isinstance(info.value, SrganError)
    return info.value.reason


def png_claiming_size(path: Path, width: int, height: int) -> None:
    """A PNG whose header says width×height but whose data holds 8×8 pixels."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)  # IHDR data starts after signature, length, type
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # CRC over type + data
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("suffix", "options"),
    [(".png", {}), (".bmp", {}), (".tif", {}), (".tiff", {"compression": "tiff_lzw"}), (".webp", {"lossless": True})],
)
def test_lossless_formats_decode_exactly(tmp_path: Path, suffix: str, options: dict[str, object]) -> None:
    rgb = _rgb()
    path = tmp_path / f"x{suffix}"
    Image.fromarray(rgb).save(path, **options)
    image = read_image(path, max_pixels=BOUND)
    assert image.dtype == np.uint8 and image.shape == (20, 30, 3)
    np.testing.assert_array_equal(image, rgb)
    assert image.flags.writeable


def test_jpeg_decodes_close_to_source(tmp_path: Path) -> None:
    rgb = np.full((16, 24, 3), (200, 100, 50), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.jpg", quality=95)
    image = read_image(tmp_path / "x.jpg", max_pixels=BOUND)
    assert image.shape == (16, 24, 3)
    assert np.abs(image.astype(int) - rgb).max() <= 3


def test_grayscale_becomes_rgb_or_stays_gray(tmp_path: Path) -> None:
    gray = _rgb()[:, :, 0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    rgb = read_image(tmp_path / "g.png", max_pixels=BOUND)
    assert rgb.shape == (20, 30, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[:, :, channel], gray)
    kept = read_image(tmp_path / "g.png", max_pixels=BOUND, keep_gray=True)
    assert kept.shape == (20, 30) and kept.dtype == np.uint8
    np.testing.assert_array_equal(kept, gray)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_is_scaled_not_clipped(tmp_path: Path, suffix: str) -> None:
    values = np.array([[0, 128, 129, 25700, 65535, 257 * 200]], dtype=np.uint16)
    path = tmp_path / f"deep{suffix}"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I;16")
    kept = read_image(path, max_pixels=BOUND, keep_gray=True)
    # round(v / 257): 128 / 257 = 0.498 -> 0, 129 / 257 = 0.502 -> 1
    np.testing.assert_array_equal(kept, [[0, 0, 1, 100, 255, 200]])
    rgb = read_image(path, max_pixels=BOUND)
    np.testing.assert_array_equal(rgb[0, :, 1], [0, 0, 1, 100, 255, 200])


def test_32_bit_integer_gray_is_read_as_16_bit(tmp_path: Path) -> None:
    values = np.array([[-5, 257 * 3, 65535, 70000]], dtype=np.int32)
    Image.fromarray(values, mode="I").save(tmp_path / "i.tif")
    kept = read_image(tmp_path / "i.tif", max_pixels=BOUND, keep_gray=True)
    np.testing.assert_array_equal(kept, [[0, 3, 255, 255]])


def test_cmyk_converts_to_rgb(tmp_path: Path) -> None:
    # Cyan, magenta, yellow, black and no ink, as CMYK in a lossless TIFF.
    inks = np.array([[[255, 0, 0, 0], [0, 255, 0, 0], [0, 0, 255, 0], [0, 0, 0, 255], [0, 0, 0, 0]]], dtype=np.uint8)
    Image.fromarray(inks, mode="CMYK").save(tmp_path / "c.tif")
    image = read_image(tmp_path / "c.tif", max_pixels=BOUND)
    expected = [[[0, 255, 255], [255, 0, 255], [255, 255, 0], [0, 0, 0], [255, 255, 255]]]
    np.testing.assert_array_equal(image, expected)
    # A CMYK JPEG, as print workflows write them.
    Image.fromarray(np.repeat(np.repeat(inks, 8, axis=0), 8, axis=1), mode="CMYK").save(tmp_path / "c.jpg", quality=95)
    jpeg = read_image(tmp_path / "c.jpg", max_pixels=BOUND)
    assert jpeg.shape == (8, 40, 3)
    assert np.abs(jpeg[4, 4].astype(int) - [0, 255, 255]).max() <= 8


def test_palette_converts_to_its_colours(tmp_path: Path) -> None:
    rgb = np.zeros((4, 6, 3), dtype=np.uint8)
    rgb[:, 3:] = (10, 200, 30)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=2).save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    np.testing.assert_array_equal(read_image(tmp_path / "p.png", max_pixels=BOUND), rgb)


def test_alpha_is_dropped_keeping_the_colour_under_it(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[0, 0, 3] = 255  # one opaque pixel; the others fully transparent
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png", max_pixels=BOUND), np.full((4, 4, 3), (10, 20, 30)))

    la = np.stack([np.full((4, 4), 77, dtype=np.uint8), np.zeros((4, 4), dtype=np.uint8)], axis=2)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(
        read_image(tmp_path / "la.png", max_pixels=BOUND, keep_gray=True), np.full((4, 4), 77)
    )
    assert read_image(tmp_path / "la.png", max_pixels=BOUND).shape == (4, 4, 3)

    palette = Image.fromarray(np.array([[0, 1]], dtype=np.uint8), mode="P")
    palette.putpalette([1, 2, 3, 40, 50, 60])
    palette.save(tmp_path / "pt.png", transparency=0)
    np.testing.assert_array_equal(read_image(tmp_path / "pt.png", max_pixels=BOUND), [[[1, 2, 3], [40, 50, 60]]])


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_exif_orientation_is_applied(tmp_path: Path, suffix: str) -> None:
    stored = np.zeros((16, 32, 3), dtype=np.uint8)  # H=16, W=32 as stored
    stored[:8, :8] = 255  # a white block at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation 6: the stored image must turn 90° clockwise to stand upright
    path = tmp_path / f"o{suffix}"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), **({"quality": 95} if suffix == ".jpg" else {}))
    image = read_image(path, max_pixels=BOUND)
    assert image.shape == (32, 16, 3)
    # Turned clockwise, the top-left block lands at the top-right.
    assert image[:8, -8:].min() > 200
    assert image[:8, :8].max() < 50


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.png").write_bytes(b"")
    assert _reason(tmp_path / "e.png") == "empty file"


def test_bytes_that_are_no_image(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    (tmp_path / "notes.jpg").write_text("not a photo")
    assert _reason(tmp_path / "x.png") == "not an image"
    assert _reason(tmp_path / "notes.jpg") == "not an image"


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_file(tmp_path: Path, suffix: str) -> None:
    full = tmp_path / f"full{suffix}"
    Image.fromarray(_rgb(200, 200)).save(full)
    data = full.read_bytes()
    (tmp_path / f"half{suffix}").write_bytes(data[: len(data) // 2])
    assert _reason(tmp_path / f"half{suffix}") == "truncated"


def test_a_jpeg_cut_inside_its_header_is_truncated_as_a_file_and_as_bytes(tmp_path: Path) -> None:
    """A small JPEG cut in half ends inside its header tables: Pillow fails while opening it
    (a bare OSError), not while decoding; it is still a "truncated" image, not a read failure."""
    buffer = io.BytesIO()
    Image.fromarray(_rgb(12, 16)).save(buffer, format="JPEG")
    half = buffer.getvalue()[: len(buffer.getvalue()) // 2]
    (tmp_path / "half.jpg").write_bytes(half)
    assert _reason(tmp_path / "half.jpg") == "truncated"
    with pytest.raises(ImageReadError) as caught:
        decode_bytes(half, "upload", max_pixels=BOUND, convert=to_picture)
    assert str(caught.value) == "upload: truncated"
    with pytest.raises(ImageReadError, match="^upload: empty$"):
        decode_bytes(b"", "upload", max_pixels=BOUND, convert=to_picture)


def test_damaged_data_is_corrupt(tmp_path: Path) -> None:
    full = tmp_path / "full.png"
    Image.fromarray(_rgb(200, 200)).save(full)
    data = bytearray(full.read_bytes())
    data[2000:2100] = bytes(100)  # inside the compressed pixel data: the header still reads
    (tmp_path / "bad.png").write_bytes(bytes(data))
    assert _reason(tmp_path / "bad.png") == "corrupt"


def test_too_many_pixels_is_refused_from_the_header(tmp_path: Path) -> None:
    # The data hold 8×8 pixels: decoding would fail as truncated, so this reason proves
    # the size was checked before decoding.
    png_claiming_size(tmp_path / "big.png", 150, 100)
    previous = Image.MAX_IMAGE_PIXELS
    assert _reason(tmp_path / "big.png", max_pixels=10_000) == "too many pixels (150×100 > 10000)"
    assert Image.MAX_IMAGE_PIXELS == previous  # our bound applies while we decode, then is put back
    # Far over the bound (where Pillow's own guard would refuse it unnamed), its size is told.
    png_claiming_size(tmp_path / "bomb.png", 100_000, 100_000)
    assert _reason(tmp_path / "bomb.png", max_pixels=10_000) == "too many pixels (100000×100000 > 10000)"
    # At the bound exactly it is accepted (and then fails on the missing data).
    png_claiming_size(tmp_path / "edge.png", 100, 100)
    assert _reason(tmp_path / "edge.png", max_pixels=10_000) == "truncated"


def test_write_png_round_trips(tmp_path: Path) -> None:
    rgb, gray = _rgb(), _rgb()[:, :, 1]
    write_png(tmp_path / "out" / "rgb.png", rgb)
    write_png(tmp_path / "out" / "gray.png", gray)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "rgb.png")), rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "gray.png", max_pixels=BOUND, keep_gray=True), gray)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gray.png", "rgb.png"]  # no temp files left
    with pytest.raises(ValueError):
        write_png(tmp_path / "f.png", rgb.astype(np.float32))


def test_read_error_survives_pickling(tmp_path: Path) -> None:
    # preprocess re-raises worker exceptions in the parent process.
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(ImageReadError) as info:
        read_image(tmp_path / "e.png", max_pixels=BOUND)
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.reason, copy.path, str(copy)) == ("empty file", tmp_path / "e.png", str(info.value))


def test_a_broken_link_is_listed_and_refused_by_name(tmp_path: Path) -> None:
    """Preprocess and `srgan eval` then give it a skip reason instead of losing it from the count."""
    (tmp_path / "sub").mkdir()
    write_png(tmp_path / "sub" / "a.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "sub" / "gone.png").symlink_to("deleted.png")
    assert list_images(tmp_path) == ["sub/a.png", "sub/gone.png"]
    with pytest.raises(ImageReadError) as info:
        read_image(tmp_path / "sub" / "gone.png", max_pixels=100)
    assert info.value.reason == "broken link (points to the missing file deleted.png)"
