"""`srgan export`: the ONNX graph against PyTorch, and the outputs it refuses to write.
(`mlflow models serve` of the logged models: tests/test_serving.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from tiny_stage import random_generator

from srgan.cli import main
from srgan.inference.export import ONNX_OPSET
from srgan.models.checkpoint import generator_config, save_generator

# fp32 on both sides; convolution sums in another order differ by ~1e-6 on outputs near 1.
ONNX_TOLERANCE = 1e-4


@pytest.mark.parametrize(
    ("bicubic_skip", "upsampler"), [(False, "pixelshuffle"), (True, "pixelshuffle"), (True, "nearest")]
)
def test_onnx_export_has_dynamic_axes_and_agrees_with_pytorch(
    tmp_path: Path, bicubic_skip: bool, upsampler: str
) -> None:
    gen = random_generator(bicubic_skip, upsampler=upsampler)
    save_generator(tmp_path / "gen.pt", gen, generator_config(4, 2, 8, bicubic_skip, upsampler=upsampler))
    main(["export", "--model", str(tmp_path / "gen.pt"), "--format", "onnx", "-o", str(tmp_path / "gen.onnx")])
    session = onnxruntime.InferenceSession(str(tmp_path / "gen.onnx"), providers=["CPUExecutionProvider"])
    assert [i.shape for i in session.get_inputs()] == [["batch", 3, "height", "width"]]
    for shape in [(1, 3, 12, 16), (2, 3, 21, 13)]:
        lr_img = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
        (sr_onnx,) = session.run(None, {"lr_img": lr_img.numpy()})
        with torch.no_grad():
            sr_torch = gen(lr_img).numpy()
        assert sr_onnx.shape == (shape[0], 3, shape[2] * 4, shape[3] * 4)
        assert np.abs(sr_onnx - sr_torch).max() <= ONNX_TOLERANCE


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("gen.pt", "gen.pt: srgan export writes ONNX; name the file .onnx"),  # the model itself
        ("g.png", "g.png: srgan export writes ONNX; name the file .onnx"),
        ("folder", "folder: is a folder; name the file to write, e.g. folder/generator.onnx"),
        ("file.txt/g.onnx", "file.txt/g.onnx: file.txt is a file, not a folder"),
        ("gone/g.onnx", "gone/g.onnx: gone is a broken link (points to the missing folder deleted), not a folder"),
        ("same.onnx", "same.onnx: is the model being exported; choose another output name"),
    ],
)
def test_export_refuses_an_output_it_must_not_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], output: str, message: str
) -> None:
    """One line each, and every file as it was: the checkpoint is never overwritten with ONNX."""
    monkeypatch.chdir(tmp_path)
    save_generator(tmp_path / "gen.pt", random_generator(False), generator_config(4, 2, 8, False))
    (tmp_path / "same.onnx").symlink_to(tmp_path / "gen.pt")  # a model file under an .onnx name
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("a file")
    (tmp_path / "gone").symlink_to("deleted")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    model = "same.onnx" if output == "same.onnx" else "gen.pt"
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--model", model, "-o", output])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    assert list((tmp_path / "folder").iterdir()) == []


@pytest.mark.skipif(
    not Path("/sys/kernel").is_dir(), reason="needs sysfs: a folder where even root cannot create files"
)
def test_export_into_a_folder_it_cannot_write_says_so_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Root may write into any chmod-0555 folder, not into /sys: the PermissionError a user gets."""
    save_generator(tmp_path / "gen.pt", random_generator(False), generator_config(4, 2, 8, False))
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--model", str(tmp_path / "gen.pt"), "-o", "/sys/g.onnx"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: /sys/g.onnx: cannot write (Permission denied)\n"
    assert not list(Path("/sys").glob(".g.onnx.*"))


def test_onnx_opset_is_the_documented_one(tmp_path: Path) -> None:
    import onnx

    save_generator(tmp_path / "gen.pt", random_generator(False), generator_config(4, 2, 8, False))
    main(["export", "--model", str(tmp_path / "gen.pt"), "-o", str(tmp_path / "gen.onnx")])
    opsets = {entry.domain: entry.version for entry in onnx.load(str(tmp_path / "gen.onnx")).opset_import}
    assert opsets[""] == ONNX_OPSET == 17
