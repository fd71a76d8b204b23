"""The whole pipeline through the real DVC CLI, in a temporary git repository, with tiny params.

These are the slow tests (`make test-fast` skips them): `dvc repro` of all five stages, a
`dvc exp run` variant, and `make paper`'s overrides against a localhost HTTP server.
"""

from __future__ import annotations

import functools
import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image
from torchvision.models import vgg19

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TINY = {
    "preprocess": {"hr_size": 32, "stride": 16, "max_val_patches": 4, "workers": 2},
    "model": {"blocks": 1, "channels": 8, "d_channels": 4},
    "runtime": {"workers": 0},
    "pretrain": {"steps": 20, "batch_size": 4, "crop_size": 16, "val_every": 10, "checkpoint_every": 10},
    "train": {"steps": 10, "batch_size": 4, "crop_size": 16, "val_every": 5, "checkpoint_every": 5},
    "evaluate": {"figures": 1, "figure_crop": 32},
}


def photo(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """A smooth random RGB image (gradients plus blobs), so SR has structure to learn."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [np.sin(rng.uniform(2, 9) * x + rng.uniform(0, 6)) * np.cos(rng.uniform(2, 9) * y) for _ in range(3)]
    img = (np.stack(channels, axis=2) * 0.5 + 0.5) * 255
    return Image.fromarray(np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8))


def run(cmd: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    for key in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME"):
        env.pop(key, None)
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def make_project(root: Path, params: dict) -> Path:
    """The project's committed and new files (not ignored ones) in a fresh git repository."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True)
    project = root / "project"
    for name in listed.stdout.splitlines():
        source = REPO / name
        if source.is_file() and not name.startswith(("reports/", "dvc.lock")):
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, project / name)
    import yaml

    base = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in params.items():
        base[section] = {**base.get(section, {}), **values} if isinstance(values, dict) else values
    (project / "params.yaml").write_text(yaml.safe_dump(base))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        run(cmd, project)
    return project


def mlflow_runs(project: Path) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("srgan")
    return client.search_runs([experiment.experiment_id], max_results=1000)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    rng = np.random.default_rng(0)
    for folder, count, size in (("train_images", 5, (72, 64)), ("eval_images", 2, (48, 40))):
        (root / folder).mkdir()
        for i in range(count):
            photo(rng, *size).save(root / folder / f"img{i}.png")
    project = make_project(root, {**TINY, "data": {"train": str(root / "train_images"), "eval": [str(root / "eval_images")]}})
    run(["dvc", "repro"], project)
    return project


def test_dvc_repro_builds_every_stage_and_reports(pipeline: Path) -> None:
    status = run(["dvc", "status"], pipeline)
    assert "up to date" in status.stdout
    metrics = json.loads((pipeline / "reports" / "metrics.json").read_text())
    (eval_set,) = metrics
    assert eval_set.startswith("eval_images-")
    assert set(metrics[eval_set]) == {"bicubic", "srresnet", "srgan"}
    for scores in metrics[eval_set].values():
        assert set(scores) == {"psnr", "ssim", "mse"}
        assert 5 < scores["psnr"] < 60 and 0 < scores["ssim"] <= 1
    results = (pipeline / "reports" / "results.md").read_text()
    assert "matlab" in results and "| PSNR (dB) |" in results
    assert len(list((pipeline / "reports" / "figures").glob("*.png"))) == 1
    assert (pipeline / "reports" / "plots" / "train.csv").read_text().startswith("step,g_content")
    lock = (pipeline / "dvc.lock").read_text()
    assert all(f"  {stage}:" in lock for stage in ("download", "preprocess", "pretrain", "train", "evaluate"))
    stages = {run_.data.tags["stage"] for run_ in mlflow_runs(pipeline)}
    assert stages == {"download", "preprocess", "pretrain", "train", "evaluate"}


def out_hashes(project: Path) -> dict[str, str]:
    """The md5 DVC recorded for every stage out, from dvc.lock."""
    import yaml

    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def test_same_params_and_seed_give_identical_numbers_and_models(pipeline: Path, tmp_path: Path) -> None:
    """Determinism: a second run from scratch gives the same metrics.json bytes and model hashes."""
    params = (pipeline / "params.yaml").read_text()
    again = make_project(tmp_path, {})
    (again / "params.yaml").write_text(params)
    run(["dvc", "repro"], again)
    assert (again / "reports" / "metrics.json").read_bytes() == (pipeline / "reports" / "metrics.json").read_bytes()
    first, second = out_hashes(pipeline), out_hashes(again)
    for path in ("models/srresnet.pt", "models/srgan.pt", "models/discriminator.pt", "data/prepared"):
        assert first[path] == second[path], path


def test_exp_run_reruns_only_train_and_evaluate(pipeline: Path) -> None:
    before = {r.info.run_id for r in mlflow_runs(pipeline)}
    out = run(["dvc", "exp", "run", "-n", "adv2", "-S", "train.adv_weight=0.002"], pipeline)
    log = out.stdout + out.stderr
    assert "Running stage 'train'" in log and "Running stage 'evaluate'" in log
    for stage in ("download", "preprocess", "pretrain"):
        assert f"Running stage '{stage}'" not in log
    shown = run(["dvc", "exp", "show", "--json"], pipeline).stdout
    assert "adv2" in shown and "0.002" in shown
    new = [r for r in mlflow_runs(pipeline) if r.info.run_id not in before]
    assert sorted(r.data.tags["stage"] for r in new) == ["evaluate", "train"]
    assert {r.data.tags["dvc_exp"] for r in new} == {"adv2"}
    assert {r.data.params["train.adv_weight"] for r in new} == {"0.002"}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def test_make_paper_overrides_run_end_to_end_with_vgg54(tmp_path: Path, http_root: tuple[Path, str]) -> None:
    www, url = http_root
    rng = np.random.default_rng(1)
    # Laid out like the real archives: mirflickr/imN.jpg, and benchmark/<Set>/HR/*.png.
    with zipfile.ZipFile(www / "mirflickr25k.zip", "w") as archive:
        for i in range(1, 4):
            buffer = io.BytesIO()
            photo(rng, 300, 280).save(buffer, format="JPEG", quality=95)
            archive.writestr(f"mirflickr/im{i}.jpg", buffer.getvalue())
        archive.writestr("mirflickr/doc/license.txt", "test")
    with tarfile.open(www / "benchmark.tar", "w") as archive:
        for name in ("Set5/HR/baby.png", "Set14/HR/bridge.png"):
            buffer = io.BytesIO()
            photo(rng, 40, 36).save(buffer, format="PNG")
            info = tarfile.TarInfo(f"benchmark/{name}")
            info.size = len(buffer.getvalue())
            archive.addfile(info, io.BytesIO(buffer.getvalue()))
    torch.manual_seed(0)
    weights = tmp_path / "vgg19.pth"
    torch.save(vgg19().state_dict(), weights)

    project = make_project(tmp_path, {"runtime": {"workers": 0}, "preprocess": {"max_val_patches": 2}})
    extra = (
        f"-S data.train={url}/mirflickr25k.zip -S 'data.eval=[{url}/benchmark.tar]' "
        "-S model.blocks=2 -S pretrain.steps=2 -S train.steps=2 -S pretrain.batch_size=2 -S train.batch_size=2 "
        f"-S pretrain.val_every=2 -S train.val_every=2 -S train.vgg_weights={weights}"
    )
    venv = BIN.parent
    run(["make", "-o", str(venv / ".installed"), "paper", f"VENV={venv}", f"PAPER_EXTRA={extra}"], project, timeout=900)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    text = json.dumps(shown)
    assert '"paper"' in text and "vgg54" in text and "mirflickr25k.zip" in text
    train_runs = [r for r in mlflow_runs(project) if r.data.tags["stage"] == "train"]
    assert train_runs and train_runs[-1].data.params["train.content_loss"] == "vgg54"
    assert train_runs[-1].data.params["train.crop_size"] == "256"
    assert train_runs[-1].data.tags["dvc_exp"] == "paper"
