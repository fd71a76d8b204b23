"""Crash every stage at several random moments; `dvc repro` then finishes with the same outputs.

A reference project runs `dvc repro` uninterrupted, and records how long each stage's process
lives. A second project with the same params runs `dvc repro` again and again; each time, one
stage is SIGKILLed together with DVC (a crash, not a polite stop) at a random moment inside one
third of that stage's lifetime: early, middle and late for every stage. After every kill, no
file under any declared out may be partial. Then one last `dvc repro` must finish, and every out
DVC recorded must have the reference's hash: a resumed training gives the uninterrupted weights.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import yaml
from PIL import Image
from project import BIN, TINY, make_project, out_hashes, run, tiny_images

pytestmark = pytest.mark.e2e

STAGES = ("download", "preprocess", "pretrain", "train", "evaluate")
THIRDS = ((0.0, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 1.0))


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
    elif path.suffix in (".md", ".checked"):  # results.md, the params check's stamp
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


def stage_processes(project: Path) -> dict[str, psutil.Process]:
    """The running `python -m stages.<name>` processes of this project, by stage name. The
    `params` check (well under a second, one stamp file written atomically) is not among them."""
    found = {}
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["cwd"] == str(project) and "-m" in cmdline:
            module = cmdline[cmdline.index("-m") + 1] if cmdline.index("-m") + 1 < len(cmdline) else ""
            if module.removeprefix("stages.") in STAGES:
                found[module.removeprefix("stages.")] = proc
    return found


def dvc_repro(project: Path) -> subprocess.Popen[str]:
    """`dvc repro` in its own process group, its output in `dvc-repro.log` beside the project."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    for key in ("MLFLOW_TRACKING_URI", "DVC_ROOT", "DVC_EXP_NAME"):
        env.pop(key, None)
    with open(project.parent / "dvc-repro.log", "w") as log:
        return subprocess.Popen(
            ["dvc", "repro"],
            cwd=project,
            env=env,
            text=True,
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stage_lifetimes(project: Path) -> dict[str, float]:
    """Run `dvc repro` to the end, watching how long each stage's process lives (seconds)."""
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    proc = dvc_repro(project)
    while proc.poll() is None:
        now = time.monotonic()
        for name in stage_processes(project):
            first.setdefault(name, now)
            last[name] = now
        time.sleep(0.02)
    assert proc.returncode == 0, "the uninterrupted reference run failed"
    return {name: last[name] - first[name] for name in first}


def crash_during(project: Path, stage: str, fraction: float, lifetime: float) -> bool:
    """Start `dvc repro`; once `stage` runs, SIGKILL DVC and the stage after `fraction` of its
    reference lifetime. False when DVC never ran `stage` (an earlier crash let it finish)."""
    proc = dvc_repro(project)
    try:
        while proc.poll() is None:
            running = stage_processes(project)
            if stage in running:
                started = running[stage].create_time()
                time.sleep(max(0.0, started + fraction * lifetime - time.time()))
                return True
            if any(STAGES.index(name) > STAGES.index(stage) for name in running):
                return False
            time.sleep(0.01)
        # DVC ended by itself: only a success may stand in for "an earlier crash let it finish".
        assert proc.returncode == 0, (project.parent / "dvc-repro.log").read_text()
        return False
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # DVC and every stage process had already exited
        proc.wait()


def test_sigkill_at_random_moments_of_every_stage_then_repro_matches_uninterrupted(tmp_path: Path) -> None:
    params = {**TINY, "data": tiny_images(tmp_path)}
    reference = make_project(tmp_path / "reference", params)
    lifetimes = stage_lifetimes(reference)
    assert set(lifetimes) == set(STAGES)

    project = make_project(tmp_path / "crashed", params)
    rng = random.Random(7)
    crashes: dict[str, list[float]] = {}
    for stage in STAGES:
        for low, high in THIRDS:
            fraction = rng.uniform(low, high)
            if crash_during(project, stage, fraction, lifetimes[stage]):
                crashes.setdefault(stage, []).append(round(fraction, 2))
            assert_no_partial_outs(project)
    # Every stage crashed early and later in its life (a crash may land after a quick stage ended).
    assert set(crashes) == set(STAGES), crashes
    assert all(len(points) >= 2 for points in crashes.values()), crashes

    run(["dvc", "repro"], project)
    assert "up to date" in run(["dvc", "status"], project).stdout
    assert_no_partial_outs(project)
    assert out_hashes(project) == out_hashes(reference)
    assert (project / "reports" / "metrics.json").read_bytes() == (reference / "reports" / "metrics.json").read_bytes()
