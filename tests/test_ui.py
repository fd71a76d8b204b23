"""`make ui` as a user opens it: MLflow's own server on the session's reproduced tiny project,
read through the REST API the UI reads, and rendered by headless Chromium where Debian's package
is installed (`apt-get install chromium`; those checks skip cleanly where it is absent)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import Reproduced
from mlflow.tracking import MlflowClient
from PIL import Image
from project import BIN, clean_env, free_port, image_steps, run

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium)"
)
URL_LINE = re.compile(
    r"^MLflow UI: (http://127\.0\.0\.1:(\d+)/#/experiments/(\d+)/runs\?workflowType=machine_learning) "
)


@dataclass(frozen=True)
class Ui:
    project: Path
    url: str  # the run list's address, as `make ui` printed it
    base: str  # http://127.0.0.1:<port>
    experiment_id: str


@pytest.fixture(scope="module")
def ui(reproduced: Reproduced, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    """`make ui PORT=…` in the reproduced project, until it has printed the run list's address."""
    port = free_port()
    log = tmp_path_factory.mktemp("ui") / "make-ui.log"
    command = ["make", "-o", str(BIN.parent / ".installed"), "ui", f"VENV={BIN.parent}", f"PORT={port}"]
    with open(log, "w") as out:
        process = subprocess.Popen(
            command,
            cwd=reproduced.project,
            env=clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    try:
        found = None
        deadline = time.monotonic() + 120
        while found is None and time.monotonic() < deadline and process.poll() is None:
            found = next(filter(None, map(URL_LINE.match, log.read_text().splitlines())), None)
            time.sleep(0.5)
        assert found, f"make ui printed no run-list address:\n{log.read_text()[-3000:]}"
        assert found.group(2) == str(port)
        yield Ui(reproduced.project, found.group(1), f"http://127.0.0.1:{port}", found.group(3))
    finally:
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: to the whole process group, as a terminal sends it
        process.wait(timeout=60)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # the server is gone with it: its port is free again


# One worker of `pytest -n` runs every test that shares the session's reproduced project.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("reproduced")]


def api(ui: Ui, endpoint: str, **params: str) -> dict:
    """A GET of MLflow's REST API, which the UI's pages call."""
    answer = requests.get(f"{ui.base}/api/2.0/mlflow/{endpoint}", params=params, timeout=30)
    answer.raise_for_status()
    return answer.json()


def runs(ui: Ui) -> list[dict]:
    answer = requests.post(
        f"{ui.base}/api/2.0/mlflow/runs/search", json={"experiment_ids": [ui.experiment_id]}, timeout=30
    )
    answer.raise_for_status()
    return answer.json()["runs"]


def tags(run_: dict) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in run_["data"].get("tags", [])}


def workspace_run(ui: Ui, stage: str) -> dict:
    """The first execution of `stage`: the reproduction's own (later tests run experiments)."""
    candidates = [r for r in runs(ui) if tags(r)["stage"] == stage and not tags(r)["dvc_exp"]]
    return min(candidates, key=lambda r: int(r["info"]["start_time"]))


def artifact_paths(ui: Ui, run_id: str, path: str = "") -> dict[str, bool]:
    """Path -> is_dir of one level of a run's artifacts, as the UI lists them."""
    listed = api(ui, "artifacts/list", run_id=run_id, **({"path": path} if path else {}))
    return {f["path"]: f["is_dir"] for f in listed.get("files", [])}


def artifact(ui: Ui, run_id: str, path: str) -> bytes:
    answer = requests.get(f"{ui.base}/get-artifact", params={"path": path, "run_uuid": run_id}, timeout=30)
    answer.raise_for_status()
    return answer.content


def rendered(url: str, profile: Path) -> str:
    """The page's DOM after headless Chromium ran its scripts for 20 s of virtual time."""
    out = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=1400,900",
            "--virtual-time-budget=20000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_runs_are_named_stage_experiment_and_commit_and_the_experiment_is_model_training(ui: Ui) -> None:
    experiment = api(ui, "experiments/get", experiment_id=ui.experiment_id)["experiment"]
    assert experiment["name"] == "srgan"
    assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in experiment["tags"]
    first = run(["git", "rev-list", "--max-parents=0", "HEAD"], ui.project).stdout.strip()
    names = {r["info"]["run_name"] for r in runs(ui)}
    for stage in ("download", "preprocess", "pretrain", "train", "evaluate"):
        assert f"{stage} · workspace · {first[:7]}" in names, names
    for r in runs(ui):  # experiments' runs too, where an earlier test ran them
        t = tags(r)
        assert r["info"]["run_name"] == f"{t['stage']} · {t['dvc_exp'] or 'workspace'} · {t['git_commit'][:7]}"


def test_evaluate_run_has_its_table_as_description_and_results_md_beside_its_figures(ui: Ui) -> None:
    evaluate = workspace_run(ui, "evaluate")
    run_id = evaluate["info"]["run_id"]
    note = tags(evaluate)["mlflow.note.content"]
    metrics = {m["key"]: m["value"] for m in evaluate["data"]["metrics"]}
    (eval_set,) = {key.split(".")[0] for key in metrics}
    assert note.startswith("Metric convention: matlab:")
    lpips = next(line for line in note.splitlines() if line.startswith("| LPIPS"))
    cells = [cell.strip() for cell in lpips.strip("|").split("|")]
    shown = [float(cells[1 + i]) for i in range(3)]
    assert shown == [round(metrics[f"{eval_set}.{m}.lpips"], 4) for m in ("bicubic", "srresnet", "srgan")]

    root = artifact_paths(ui, run_id)
    assert root.get("results.md") is False and root.get("figures") is True and root.get("scores.json") is False
    results = artifact(ui, run_id, "results.md").decode()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", results)
    assert links == ["figures/perception_distortion.png"]
    for link in links:  # each resolves beside results.md, as the Artifacts view resolves it
        assert Image.open(io.BytesIO(artifact(ui, run_id, link))).size[0] > 100
    assert set(artifact_paths(ui, run_id, "figures")) == {
        f"figures/{p.name}" for p in (ui.project / "reports" / "figures").glob("*.png")
    }


def test_training_runs_share_their_last_validation_grid_by_name_for_the_compare_view(ui: Ui) -> None:
    pretrain, train = workspace_run(ui, "pretrain"), workspace_run(ui, "train")
    client = MlflowClient(f"sqlite:///{ui.project / 'mlflow.db'}")
    for r in (pretrain, train):
        run_id = r["info"]["run_id"]
        root = artifact_paths(ui, run_id)
        assert root.get("validation.png") is False, root
        params = {p["key"]: p["value"] for p in r["data"]["params"]}
        last = image_steps(client, run_id, "validation")[-1]  # the slider keeps every step's grid
        assert last == int(params[f"{tags(r)['stage']}.steps"])
        grids = artifact_paths(ui, run_id, "images")
        (series,) = [p for p in grids if p.startswith(f"images/validation+step+{last}+") and p.endswith(".png")]
        final = np.asarray(Image.open(io.BytesIO(artifact(ui, run_id, "validation.png"))))
        assert np.array_equal(final, np.asarray(Image.open(io.BytesIO(artifact(ui, run_id, series)))))


@needs_chromium
def test_chromium_opens_make_uis_address_on_the_named_runs_and_compares_validation_grids(
    ui: Ui, tmp_path: Path
) -> None:
    page = rendered(ui.url, tmp_path / "runs")
    first = run(["git", "rev-list", "--max-parents=0", "HEAD"], ui.project).stdout.strip()
    for stage in ("pretrain", "train", "evaluate"):
        assert f"{stage} · workspace · {first[:7]}" in page
    assert "Training runs" not in page and "Detect Issues" not in page  # not the GenAI overview

    ids = [workspace_run(ui, stage)["info"]["run_id"] for stage in ("pretrain", "train")]
    query = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps([ui.experiment_id])})
    compare = rendered(f"{ui.base}/#/compare-runs?{query}", tmp_path / "compare")
    assert "validation.png" in compare and "No common artifacts" not in compare


def test_a_second_make_ui_on_the_same_port_is_one_line_and_a_failure(ui: Ui) -> None:
    port = ui.base.rsplit(":", 1)[1]
    began = time.monotonic()
    second = run(
        ["make", "-s", "-o", str(BIN.parent / ".installed"), "ui", f"VENV={BIN.parent}", f"PORT={port}"],
        ui.project,
        check=False,
        timeout=60,
    )
    assert second.returncode != 0 and time.monotonic() - began < 30
    errors = [line for line in second.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: 127.0.0.1:{port}: cannot serve the MLflow UI there (Address already in use); stop what uses it "
        f"(an earlier `make ui`?) or choose another port: make ui PORT={int(port) + 1}"
    ], second.stderr
    assert "Traceback" not in second.stderr


def test_srgan_ui_without_a_store_or_on_a_tracking_server_says_so_in_one_line(tmp_path: Path) -> None:
    srgan_ui = [str(BIN / "srgan"), "ui", "--port", str(free_port())]
    out = run(srgan_ui, tmp_path, check=False, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"error: {tmp_path.resolve() / 'mlflow.db'}: no MLflow store yet; `make repro` (or any stage) creates it"
    )
    server = run(srgan_ui, tmp_path, check=False, timeout=60, env={"MLFLOW_TRACKING_URI": "http://alice:pw@team:5000"})
    assert server.returncode == 2
    assert server.stderr.strip() == (
        "error: http://alice:***@team:5000: the runs are on this tracking server (MLFLOW_TRACKING_URI), whose own "
        f"UI shows them; unset MLFLOW_TRACKING_URI for {tmp_path.resolve() / 'mlflow.db'}"
    )
    assert not (tmp_path / "mlflow.db").exists()
