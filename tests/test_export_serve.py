"""Formats people deploy: the ONNX export, and the MLflow-logged generator behind `mlflow models serve`.

The served model speaks MLflow's tensor JSON: POST /invocations with
`{"inputs": [[[[r, ...], ...], [[g, ...]], [[b, ...]]]]}`, float32 (1, 3, h, w) RGB in [0, 1],
answered by `{"predictions": [...]}`, float32 (1, 3, h·s, w·s), unclamped (clamp to [0, 1]).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image
from project import free_port, stop_process_group, wait_for_url
from torch import nn

from srgan.cli import main
from srgan.inference.export import ONNX_OPSET
from srgan.models.checkpoint import generator_config, save_generator
from srgan.models.networks import Generator
from srgan.tracking.runs import stage_run

# fp32 on both sides; convolution sums in another order differ by ~1e-6 on outputs near 1.
ONNX_TOLERANCE = 1e-4


def random_generator(bicubic_skip: bool, seed: int = 0) -> Generator:
    """A tiny random-weight ×4 generator in eval mode, BN statistics not the identity."""
    torch.manual_seed(seed)
    gen = Generator(scale=4, blocks=2, channels=8, bicubic_skip=bicubic_skip)
    with torch.no_grad():
        for module in gen.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return gen.eval()


@pytest.mark.parametrize("bicubic_skip", [False, True])
def test_onnx_export_has_dynamic_axes_and_agrees_with_pytorch(tmp_path: Path, bicubic_skip: bool) -> None:
    gen = random_generator(bicubic_skip)
    save_generator(tmp_path / "gen.pt", gen, generator_config(4, 2, 8, bicubic_skip))
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


@pytest.mark.e2e
def test_mlflow_serves_the_logged_generator_like_srgan_upscale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the project root: mlruns/ goes here
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with stage_run("train", {"model.blocks": 2}) as tracker:
        run_uri = tracker.log_generator(random_generator(bicubic_skip=True))
        version = tracker.register_generator(run_uri)
    model_uri = f"models:/srgan-generator/{version}"  # the registry's name for the same model

    rgb = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)  # (h, w, 3)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    outputs = []
    for uri in (run_uri, model_uri):
        out_path = tmp_path / f"out{len(outputs)}.png"
        main(
            [
                "upscale",
                str(tmp_path / "in.png"),
                "-o",
                str(out_path),
                "--model",
                uri,
                "--device",
                "cpu",
                "--precision",
                "fp32",
            ]
        )
        with Image.open(out_path) as out:
            outputs.append(np.asarray(out))  # (48, 64, 3)
    upscaled = outputs[0]
    assert np.array_equal(outputs[1], upscaled)

    port = free_port()
    log = tmp_path / "serve.log"
    # The server execs `uvicorn` from PATH: the one installed beside this Python.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with open(log, "wb") as log_file:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "models",
                "serve",
                "-m",
                model_uri,
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-w",
                "1",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_url(f"{url}/ping", server, log, timeout=120)
        lr_img = rgb.transpose(2, 0, 1)[None].astype(np.float32) / 255  # (1, 3, 12, 16) in [0, 1]
        request = urllib.request.Request(
            f"{url}/invocations",
            data=json.dumps({"inputs": lr_img.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            predictions = np.asarray(json.load(answer)["predictions"], dtype=np.float32)
    finally:
        stop_process_group(server)

    assert predictions.shape == (1, 3, 48, 64)
    served = np.round(np.clip(predictions[0], 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)  # (48, 64, 3)
    mse = np.mean((served.astype(np.float64) - upscaled) ** 2)
    assert mse == 0 or 10 * math.log10(255**2 / mse) >= 50
