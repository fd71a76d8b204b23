"""Crash every stage at random moments; `dvc repro` then finishes with the same outputs.

The session's reference project (conftest.py) ran `dvc repro` uninterrupted and recorded how long
each stage's process lived. A second project with the same params, a fresh clone of a repository
that committed the reference's `dvc.lock` and reports (as this one does), runs `dvc repro` again
and again; each time, one stage is SIGKILLed together with DVC (a crash, not a
polite stop) at a random moment inside one half of that stage's lifetime: early and late for
every stage. After every kill, no file under any declared out may be partial. Then one last `dvc
repro` must finish, and every out DVC recorded (data, every model) and `metrics.json` must have
the reference's bytes: a resumed training gives the uninterrupted weights, and a run from scratch
with the same params and seed gives the same numbers and models. The reference trains on
realistically degraded LR (conftest.py), so this also proves that chain's every draw
reproducible. Its MLflow store then holds the evaluate run with the metric table, though the
reports were the committed ones.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import yaml
from conftest import Reproduced
from mlflow.tracking import MlflowClient
from PIL import Image
from project import STAGES, dvc_repro, make_project, mlflow_runs, out_hashes, run, stage_processes

# One worker of `pytest -n` runs every test that shares the session's reproduced project.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("reproduced")]

HALVES = ((0.0, 0.5), (0.5, 1.0))


def declared_outs(project: Path) -> list[Path]:
    """Every out, metric and plot path of dvc.yaml, with its `vars` substituted."""
    spec = yaml.safe_load((project / "dvc.yaml").read_text())
    variables = {k: v for entry in spec.get("vars", []) for k, v in entry.items()}

    def resolve(path: str) -> Path:
        return project / re.sub(r"\$\{(\w+)\}", lambda m: str(variables[m.group(1)]), path)

    paths = []
    for stage in spec["stages"].values():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key, []):
                paths.append(resolve(entry if isinstance(entry, str) else next(iter(entry))))
    return paths


def assert_complete(path: Path) -> None:
    """`path` is a whole file of its kind: it parses, and no temporary name is left behind."""
    assert ".tmp" not in path.name, f"temporary file under an out: {path}"
    if path.suffix == ".npy":
        array = np.load(path, mmap_mode="r")
        assert array.dtype == np.uint8 and array.ndim == 4, path
    elif path.suffix == ".pt":
        assert "format" in torch.load(path, weights_only=True), path
    elif path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        with Image.open(path) as image:
            image.load()
    elif path.suffix == ".csv":
        rows = list(csv.reader(path.open()))
        assert rows and all(len(row) == len(rows[0]) for row in rows), path
    elif path.suffix in (".md", ".checked", ".logged"):  # results.md, the stamps of the params check and of MLflow
        assert path.read_text().strip(), path
    else:
        raise AssertionError(f"unexpected file under an out: {path}")


def assert_no_partial_outs(project: Path) -> None:
    for out in declared_outs(project):
        if out.is_file():
            assert_complete(out)
        elif out.is_dir():
            for path in out.rglob("*"):
                if path.is_file():
                    assert_complete(path)
        # Temporary folders beside an out are not under it; they are cleared by the next run.


def alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def crash_during(project: Path, stage: str, fraction: float, lifetime: float) -> bool:
    """Start `dvc repro`; once `stage` runs, SIGKILL DVC and the stage after `fraction` of its
    reference lifetime, or as soon as the stage's process ends if that comes first (the machine
    may be busier or idler than in the reference run: the crash stays inside this stage, not in
    the next one). False when DVC never ran `stage` (an earlier crash let it finish)."""
    proc = dvc_repro(project)
    try:
        while proc.poll() is None:
            running = stage_processes(proc)
            if stage in running:
                deadline = running[stage].create_time() + fraction * lifetime
                while time.time() < deadline and alive(running[stage]):
                    time.sleep(0.02)
                return True
            if any(STAGES.index(name) > STAGES.index(stage) for name in running):
                return False
            time.sleep(0.02)
        # DVC ended by itself: only a success may stand in for "an earlier crash let it finish".
        assert proc.returncode == 0, (project.parent / "dvc-repro.log").read_text()
        return False
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # DVC and every stage process had already exited
        proc.wait()


def test_sigkill_at_random_moments_of_every_stage_then_repro_matches_uninterrupted(
    reproduced: Reproduced, tmp_path: Path
) -> None:
    lifetimes = reproduced.lifetimes
    assert set(lifetimes) == set(STAGES)

    # A fresh clone of a repository that committed the reference's dvc.lock and reports, as this
    # one does: nothing but git's files, no DVC cache, no MLflow store.
    project = make_project(tmp_path, reproduced.params)
    shutil.copy2(reproduced.pristine / "dvc.lock", project / "dvc.lock")
    shutil.copytree(reproduced.pristine / "reports", project / "reports")
    run(["git", "add", "-A"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "the reference's results"], project)
    rng = random.Random(7)
    crashes: dict[str, list[float]] = {}
    for stage in STAGES:
        for low, high in HALVES:
            fraction = rng.uniform(low, high)
            if crash_during(project, stage, fraction, lifetimes[stage]):
                crashes.setdefault(stage, []).append(round(fraction, 2))
            assert_no_partial_outs(project)
    # Every stage crashed at least once (a kill at a stage's very end can let DVC record it done,
    # and the next attempt then finds nothing of that stage to run).
    assert set(crashes) == set(STAGES), crashes

    run(["dvc", "repro"], project)
    assert "up to date" in run(["dvc", "status"], project).stdout
    assert_no_partial_outs(project)
    hashes = out_hashes(project)
    assert {"models/srresnet.pt", "models/srgan.pt", "models/discriminator.pt", "data/prepared"} <= set(hashes)
    assert hashes == reproduced.hashes
    assert (project / "reports" / "metrics.json").read_bytes() == reproduced.metrics
    assert not run(["git", "status", "--porcelain"], project).stdout  # the committed results, byte for byte

    # The models came out as committed, so evaluate's reports were already the right ones; it ran
    # all the same (its stamp is not in git), and the clone's MLflow store holds its table.
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    finished = [r for r in mlflow_runs(project) if r.info.status == "FINISHED"]
    evaluations = [r for r in finished if r.data.tags["stage"] == "evaluate"]
    assert evaluations
    evaluation = evaluations[0]  # the newest (a kill at the very end may have let an earlier one finish)
    assert {"scores.json", "results.md"} <= {a.path for a in client.list_artifacts(evaluation.info.run_id)}
    ((eval_set, scores),) = json.loads(reproduced.metrics).items()
    assert evaluation.data.metrics[f"{eval_set}.srgan.psnr"] == pytest.approx(scores["srgan"]["psnr"])
    srgan_run = evaluation.data.tags["lineage.srgan_run_id"]
    (version,) = client.search_model_versions(f"run_id = '{srgan_run}'")
    assert version.tags[f"eval.matlab.{eval_set}.lpips"] == str(scores["srgan"]["lpips"])
