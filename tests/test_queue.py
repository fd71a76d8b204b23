"""Issue 7: concurrent experiments. Two `dvc exp run --queue` variants run at the same time
(`dvc queue start -j 2`), both finish, both show in `dvc exp show`, and both land in the
project's own MLflow store with every metric: no write lost to sqlite's "database is locked".

The queued runs execute in DVC's temporary copies under `.dvc/tmp/exps/`; they find the
project's `mlflow.db` and `.cache/` through `$DVC_ROOT` (srgan/core/runtime.py).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Reproduced
from mlflow.tracking import MlflowClient
from project import image_steps, run

# One worker of `pytest -n` runs every test that shares the session's reproduced project.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("reproduced")]

# name -> train.adv_weight
EXPERIMENTS = {"adv-lo": 0.002, "adv-hi": 0.005}
# The queued runs train longer than TINY's 10 steps, with a metric write every 5 steps, so the two
# train stages are long enough to overlap and both write to sqlite many times while the other does.
STEPS, EVERY = 40, 5
TRAIN_CURVES = ("g_content", "g_adv", "d_real", "d_fake", "val_psnr", "val_lpips")
LOG_EVERY = 10  # srgan.training.loop.LOG_EVERY: losses are logged at these steps and at checkpoints
QUEUE_TIMEOUT = 600
FINAL = {"Success", "Failed"}


def queue_status(project: Path) -> dict[str, str]:
    """`dvc queue status` as {experiment name: Queued | Running | Success | Failed}."""
    statuses = {}
    for line in run(["dvc", "queue", "status"], project).stdout.splitlines():
        words = line.split()
        for name in EXPERIMENTS:
            if name in words:
                statuses[name] = words[-1]
    return statuses


def wait_for_queue(project: Path) -> dict[str, str]:
    deadline = time.monotonic() + QUEUE_TIMEOUT
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        statuses = queue_status(project)
        if set(statuses) == set(EXPERIMENTS) and set(statuses.values()) <= FINAL:
            return statuses
        time.sleep(3)
    logs = {name: _logs(project, name) for name in EXPERIMENTS}
    pytest.fail(
        f"queue not done after {QUEUE_TIMEOUT} s: {statuses}\n" + "\n".join(f"--- {n}\n{t}" for n, t in logs.items())
    )


def _logs(project: Path, name: str) -> str:
    try:
        return run(["dvc", "queue", "logs", name], project).stdout[-6000:]
    except AssertionError as err:
        return str(err)


def worker_pids(project: Path) -> list[int]:
    """PIDs of this project's queue workers that are still alive (from DVC's process records)."""
    alive = []
    for info in (project / ".dvc" / "tmp" / "exps" / "celery").glob("dvc-exp-worker-*.json"):
        record = json.loads(info.read_text())
        pid = record.get("pid")
        if record.get("returncode") is not None or not pid:
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"queue-worker" in cmdline and state != "Z":
            alive.append(pid)
    return alive


def wait_for_no_workers(project: Path, timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while (pids := worker_pids(project)) and time.monotonic() < deadline:
        time.sleep(1)
    return pids


def find_exps(node: Any, name: str) -> Iterator[dict[str, Any]]:
    """Every entry named `name` that carries data, anywhere in `dvc exp show --json`."""
    if isinstance(node, dict):
        if node.get("name") == name and isinstance(node.get("data"), dict):
            yield node
        for value in node.values():
            yield from find_exps(value, name)
    elif isinstance(node, list):
        for value in node:
            yield from find_exps(value, name)


def logged_steps(steps: int, every: int) -> list[int]:
    """The steps at which a training stage logs its losses (srgan.training.loop.run_loop)."""
    return [s for s in range(1, steps + 1) if s % LOG_EVERY == 0 or s % every == 0 or s == steps]


def close(a: float, b: float) -> bool:
    """Equal up to the CSV's 6 digits; NaN matches NaN (LPIPS of patches too small to measure)."""
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6) or (math.isnan(a) and math.isnan(b))


@pytest.fixture()
def project(reproduced: Reproduced, tmp_path: Path) -> Iterator[Path]:
    """A copy of the session's reproduced tiny project (conftest.py) as it was after `dvc repro`:
    the baseline the experiments start from, every stage run once; its own new MLflow store."""
    project = tmp_path / "project"
    shutil.copytree(reproduced.pristine, project, symlinks=True)
    try:
        yield project
    finally:
        # No worker or experiment may outlive the test, whatever happened above.
        try:
            run(["dvc", "queue", "stop", "--kill"], project, timeout=120)
        except (AssertionError, subprocess.SubprocessError):
            pass
        for pid in wait_for_no_workers(project, timeout=30):
            os.kill(pid, signal.SIGKILL)


def test_two_queued_experiments_run_concurrently_and_log_everything(project: Path) -> None:
    assert "up to date" in run(["dvc", "status"], project).stdout  # the baseline: every stage ran once
    for name, weight in EXPERIMENTS.items():
        run(
            [
                "dvc",
                "exp",
                "run",
                "--queue",
                "-n",
                name,
                "-S",
                f"train.adv_weight={weight}",
                "-S",
                f"train.steps={STEPS}",
                "-S",
                f"train.val_every={EVERY}",
                "-S",
                f"train.checkpoint_every={EVERY}",
            ],
            project,
        )
    assert queue_status(project) == dict.fromkeys(EXPERIMENTS, "Queued")

    started = run(["dvc", "queue", "start", "-j", "2"], project)
    assert "Started '2' new experiments task queue workers" in started.stdout
    statuses = wait_for_queue(project)
    failed = [name for name, status in statuses.items() if status != "Success"]
    assert not failed, "\n".join(f"--- {name} ({statuses[name]})\n{_logs(project, name)}" for name in failed)

    # The workers go away when asked (and on their own once the queue is empty).
    run(["dvc", "queue", "stop"], project)
    assert wait_for_no_workers(project) == []

    # DVC: both experiments, each with its own adv_weight and its metrics.json.
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    exps = {}
    for name, weight in EXPERIMENTS.items():
        (entry,) = find_exps(shown, name)
        data = entry["data"]
        params = data["params"]["params.yaml"]["data"]
        assert params["train"]["adv_weight"] == weight and params["train"]["steps"] == STEPS
        metrics = data["metrics"]["reports/metrics.json"]["data"]
        (eval_set,) = metrics
        assert set(metrics[eval_set]) == {"bicubic", "srresnet", "srgan", "hr"}
        exps[name] = (entry["rev"], metrics)
    assert exps["adv-lo"][1][eval_set]["srgan"] != exps["adv-hi"][1][eval_set]["srgan"]

    # MLflow: the project's own store holds both experiments' train and evaluate runs.
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("srgan")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    logged_models = client.search_logged_models([experiment.experiment_id], max_results=1000)
    train_runs = {}
    for name, weight in EXPERIMENTS.items():
        rev, metrics = exps[name]
        mine = {r.data.tags["stage"]: r for r in runs if r.data.tags.get("dvc_exp") == name}
        assert sorted(r.data.tags["stage"] for r in runs if r.data.tags.get("dvc_exp") == name) == ["evaluate", "train"]
        for stage_run in mine.values():
            assert stage_run.info.status == "FINISHED", (name, stage_run.data.tags["stage"])
            assert stage_run.data.params["train.adv_weight"] == str(weight)
            assert stage_run.data.params["train.steps"] == str(STEPS)
            assert Path(stage_run.info.artifact_uri.removeprefix("file://")).is_relative_to(project / "mlruns")

        # train: every curve point, equal to the experiment's own train.csv, up to the last step.
        train = mine["train"]
        train_runs[name] = train
        text = subprocess.run(
            ["git", "show", f"{rev}:reports/plots/train.csv"], cwd=project, capture_output=True, text=True, check=True
        ).stdout
        rows = list(csv.DictReader(io.StringIO(text)))
        expected = logged_steps(STEPS, EVERY)
        assert [int(row["step"]) for row in rows] == expected
        for key in TRAIN_CURVES:
            history = sorted(client.get_metric_history(train.info.run_id, key), key=lambda m: m.step)
            steps = [m.step for m in history]
            if key.startswith("val_"):
                assert steps == [0, *range(EVERY, STEPS + 1, EVERY)], (name, key)
            else:
                assert steps == expected, (name, key)
            assert steps[-1] == STEPS
            by_step = {m.step: m.value for m in history}
            for row in rows:
                if int(row["step"]) in by_step:
                    assert close(by_step[int(row["step"])], float(row[key])), (name, key, row["step"])
        assert image_steps(client, train.info.run_id, "validation") == [0, *range(EVERY, STEPS + 1, EVERY)]
        models = [m for m in logged_models if m.source_run_id == train.info.run_id]
        assert sorted((m.name, str(m.status)) for m in models) == [("generator", "READY"), ("upscaler", "READY")]

        # evaluate: its final metric table, equal to the experiment's metrics.json.
        evaluate = mine["evaluate"]
        flat = {
            f"{s}.{m}.{k}": v
            for s, models in metrics.items()
            for m, scores in models.items()
            for k, v in scores.items()
        }
        assert set(flat) <= set(evaluate.data.metrics)
        for key, value in flat.items():
            history = client.get_metric_history(evaluate.info.run_id, key)
            assert [m.step for m in history] == [0] and close(history[0].value, value), key
        assert "scores.json" in {a.path for a in client.list_artifacts(evaluate.info.run_id)}

    # Concurrency really happened: the two train runs overlap in time.
    lo, hi = train_runs["adv-lo"].info, train_runs["adv-hi"].info
    assert max(lo.start_time, hi.start_time) < min(lo.end_time, hi.end_time), (
        f"train runs did not overlap: {lo.start_time}-{lo.end_time} and {hi.start_time}-{hi.end_time} (ms)"
    )
    # Their resumable checkpoints went to the project's .cache too (baseline + two experiments).
    assert len(list((project / ".cache" / "train").glob("*/last.pt"))) == 3
