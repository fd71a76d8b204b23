"""A tiny copy of this project in a temporary git repository, for the end-to-end tests.

The copy holds the repository's committed and new files (not ignored ones, not `dvc.lock` or
`reports/`), with params.yaml overridden; DVC and MLflow then run in it for real.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGES = ("download", "preprocess", "pretrain", "train", "evaluate")
TINY = {
    "preprocess": {"hr_size": 32, "stride": 16, "max_val_patches": 4, "workers": 2},
    "model": {"blocks": 1, "channels": 8, "d_channels": 4},
    # Pinned: tests run beside each other (pytest -n), and under `auto` a stage's thread count, and
    # so the last bits of BatchNorm and conv-gradient sums, would follow what else is computing;
    # and the tests compare CPU bytes, which a machine with a GPU would not give under `auto`.
    "runtime": {"device": "cpu", "workers": 0, "threads": 1},
    # From scratch: the default start, the released SRResNet, has 16 blocks × 64 channels.
    "pretrain": {
        "init": "none",
        "steps": 20,
        "batch_size": 4,
        "crop_size": 16,
        "val_every": 10,
        "checkpoint_every": 10,
    },
    "train": {"steps": 10, "batch_size": 4, "crop_size": 16, "val_every": 5, "checkpoint_every": 5},
    "evaluate": {"figures": 1, "figure_crop": 32},
}


def photo(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """A smooth random RGB image (gradients plus blobs), so SR has structure to learn."""
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    channels = [np.sin(rng.uniform(2, 9) * x + rng.uniform(0, 6)) * np.cos(rng.uniform(2, 9) * y) for _ in range(3)]
    img = (np.stack(channels, axis=2) * 0.5 + 0.5) * 255
    return Image.fromarray(np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8))


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment with the venv first on PATH, without the MLflow/DVC run variables a test
    may have inherited (the tracking URI and login among them), and `extra` on top."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    for key in [k for k in env if k.startswith("MLFLOW_TRACKING_")] + ["DVC_ROOT", "DVC_EXP_NAME"]:
        env.pop(key, None)
    return {**env, **(extra or {})}


def run(
    cmd: list[str], cwd: Path, timeout: int = 600, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """`cmd` with this venv first on PATH and no inherited MLflow/DVC run variables; `env` adds
    variables on top (e.g. `MLFLOW_TRACKING_URI` of a tracking server). `check`: fail the test
    unless it exits 0."""
    result = subprocess.run(cmd, cwd=cwd, env=clean_env(env), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0 or not check, (
        f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def in_terminal(command: str, cwd: Path, columns: int) -> str:
    """What bash running `command` shows in a terminal `columns` wide: a pty, not a pipe, as
    tools size their tables to the terminal they find. Colour codes and carriage returns removed."""
    main, side = pty.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = clean_env({"TERM": "xterm-256color"})
    for key in ("COLUMNS", "LINES"):  # the terminal's own size, not an inherited override
        env.pop(key, None)
    process = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, stdin=side, stdout=side, stderr=side)
    os.close(side)
    shown = []
    while True:
        try:
            chunk = os.read(main, 1 << 16)
        except OSError:  # EIO: every process holding the terminal has exited
            break
        if not chunk:
            break
        shown.append(chunk)
    os.close(main)
    assert process.wait(timeout=120) == 0, b"".join(shown).decode(errors="replace")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(shown).decode()).replace("\r", "")


def make_project(root: Path, params: dict) -> Path:
    """The project's committed and new files (not ignored ones) in a fresh git repository."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    )
    project = root / "project"
    for name in listed.stdout.splitlines():
        source = REPO / name
        if source.is_file() and not name.startswith(("reports/", "dvc.lock")):
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, project / name)
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in params.items():
        base[section] = {**base.get(section, {}), **values} if isinstance(values, dict) else values
    (project / "params.yaml").write_text(yaml.safe_dump(base))
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"],
    ):
        run(cmd, project)
    return project


def mlflow_runs(project: Path) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("srgan")
    return client.search_runs([experiment.experiment_id], max_results=1000)


def tiny_images(root: Path) -> dict[str, object]:
    """Smooth random photos under `root` (5 train, 72×64; 2 eval, 104×200, the least NIQE measures after
    a 4-px border crop: two 96-px blocks); the `data` params for them."""
    rng = np.random.default_rng(0)
    for folder, count, size in (("train_images", 5, (72, 64)), ("eval_images", 2, (104, 200))):
        (root / folder).mkdir()
        for i in range(count):
            photo(rng, *size).save(root / folder / f"img{i}.png")
    return {"train": str(root / "train_images"), "eval": [str(root / "eval_images")]}


def out_hashes(project: Path) -> dict[str, str]:
    """The md5 DVC recorded for every stage out, from dvc.lock."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_url(url: str, server: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Poll `url` until it answers 200; fail with the server's log if it exits or times out."""
    name = " ".join(str(arg) for arg in server.args[:3]) if isinstance(server.args, list) else str(server.args)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"{name} exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    pytest.fail(f"{name} did not answer {url} in {timeout} s:\n{log.read_text()[-3000:]}")


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """End a server started with `start_new_session=True` and the workers it started."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def image_steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    """The steps at which `mlflow.log_image(..., key=key, step=...)` logged an image to a run
    (MLflow names each `images/<key>+step+<step>+timestamp+...png`)."""
    steps = []
    for artifact in client.list_artifacts(run_id, "images"):
        name = artifact.path.removeprefix("images/")
        parts = name.split("+")
        if parts[0] == key and parts[1] == "step" and name.endswith(".png"):
            steps.append(int(parts[2]))
    return sorted(steps)


def stage_processes(dvc: subprocess.Popen[str]) -> dict[str, psutil.Process]:
    """The running `python -m stages.<name>` processes that `dvc` started, by stage name. The
    `params` check (well under a second, one stamp file written atomically) is not among them.
    Only DVC's descendants are read: scanning every process on the machine at this rate took a
    tenth of a core."""
    found = {}
    try:
        children = psutil.Process(dvc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return found
    for proc in children:
        try:
            cmdline = proc.cmdline()
        except psutil.Error:
            continue  # ended meanwhile
        if "-m" in cmdline and cmdline.index("-m") + 1 < len(cmdline):
            module = cmdline[cmdline.index("-m") + 1]
            if module.removeprefix("stages.") in STAGES:
                found[module.removeprefix("stages.")] = proc
    return found


def dvc_repro(project: Path) -> subprocess.Popen[str]:
    """`dvc repro` in its own process group, its output in `dvc-repro.log` beside the project."""
    with open(project.parent / "dvc-repro.log", "w") as log:
        return subprocess.Popen(
            ["dvc", "repro"],
            cwd=project,
            env=clean_env(),
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
        for name in stage_processes(proc):
            first.setdefault(name, now)
            last[name] = now
        time.sleep(0.02)
    assert proc.returncode == 0, (project.parent / "dvc-repro.log").read_text()[-3000:]
    return {name: last[name] - first[name] for name in first}
