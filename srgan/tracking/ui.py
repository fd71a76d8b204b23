"""`make ui` (`srgan ui`): MLflow's UI on the project's own store, with the address of its run list.

Two things `mlflow ui` alone got wrong for this project: MLflow 3 opened the experiment on its
GenAI overview (the runs hid under a tab), and a second UI on a busy port printed "Address already
in use" after a minute and exited 0. Here the port is tried before MLflow starts, and the address
printed, once the server answers, is the run list's in the UI's model-training pages (`runs_url`).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from srgan.core.errors import SrganError
from srgan.core.runtime import project_root
from srgan.tracking.remote import is_server, shown, tracking_uri
from srgan.tracking.store import find_experiment, use_store

START_TIMEOUT_S = 120.0  # MLflow's server takes a few seconds to start on 2 cores


def runs_url(host: str, port: int, experiment_id: str) -> str:
    """The address of the experiment's run list in MLflow 3's UI. MLflow 3.17's UI chooses its
    pages (GenAI or model training) from the `workflowType` query parameter, else from its sidebar
    toggle saved in the browser, GenAI by default; it does not read the experiment's kind tag."""
    return f"http://{host}:{port}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def check_port(host: str, port: int) -> None:
    """Refuse, in one line, a port another program (often an earlier `make ui`) listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as err:
            raise SrganError(
                f"{host}:{port}: cannot serve the MLflow UI there ({err.strerror}); stop what uses it "
                f"(an earlier `make ui`?) or choose another port: make ui PORT={port + 1}"
            ) from None


def serve_ui(host: str, port: int) -> None:
    """Serve MLflow's UI on the store the stages log to (`<root>/mlflow.db` unless
    `$MLFLOW_TRACKING_URI` names another) until Ctrl-C, printing the run list's address once the
    server answers. A tracking server has its own UI: it is named instead."""
    uri = tracking_uri()
    if is_server(uri):
        raise SrganError(
            f"{shown(uri)}: the runs are on this tracking server (MLFLOW_TRACKING_URI), whose own UI shows "
            f"them; unset MLFLOW_TRACKING_URI for {project_root() / 'mlflow.db'}"
        )
    store = Path(uri.removeprefix("sqlite:///"))
    if uri.startswith("sqlite:///") and not store.is_file():
        raise SrganError(f"{store}: no MLflow store yet; `make repro` (or any stage) creates it")
    use_store(uri)
    experiment_id = find_experiment()  # marked as model training, also in a store made before the mark
    check_port(host, port)
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    command += ["--uvicorn-opts", "--log-level warning"]  # not a line per request the browser makes
    server = subprocess.Popen(command)
    # `kill` (SIGTERM) ends this process through the `finally` below, which stops the server too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        _wait_until_up(server, host, port)
        address = runs_url(host, port, experiment_id)
        print(f"MLflow UI: {address} (the runs of {shown(uri)}; Ctrl-C stops it)", flush=True)
        server.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached the whole process group, the server included: let it finish its exit.
        server.wait()
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait()


def _wait_until_up(server: subprocess.Popen, host: str, port: int) -> None:
    """Return once the server answers its health check; one line if it exits or never answers."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SrganError(f"mlflow ui exited with status {server.returncode} before it answered on {host}:{port}")
        try:
            if requests.get(f"http://{host}:{port}/health", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise SrganError(f"mlflow ui did not answer on {host}:{port} within {START_TIMEOUT_S:g} s")
