"""The only module that imports mlflow: one run per stage execution, in experiment `srgan`.

Tracking URI: `$MLFLOW_TRACKING_URI` if set, else `sqlite:///<project root>/mlflow.db`, with
artifacts under `<project root>/mlruns`. The project root comes from
`runtime.project_root()`, so DVC's temporary experiment copies write to the same store.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

import mlflow
import srgan
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.models.signature import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec

from srgan.errors import SrganError
from srgan.runtime import project_root

EXPERIMENT = "srgan"
T = TypeVar("T")

# Images in, images out: batch, height and width are free (-1); an inferred signature would pin
# the example's 8×8 size and reject other inputs at predict time.
IMAGE_SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1))]),
    outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1))]),
)


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def _retry(call: Callable[[], T], attempts: int = 20) -> T:
    """Retry a store call that lost a race for sqlite's write lock (concurrent `dvc exp` runs)."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - mlflow wraps sqlite errors in several types
            if "locked" not in str(err).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _git_commit(root: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def _experiment_id() -> str:
    client = MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    # A local store keeps the artifacts beside it (<root>/mlruns); a tracking server chooses their
    # place itself (mlflow-artifacts:/, proxied, when it serves them), readable from every machine.
    remote = urlparse(tracking_uri()).scheme in ("http", "https")
    location = None if remote else (project_root() / "mlruns").as_uri()
    try:
        return client.create_experiment(EXPERIMENT, artifact_location=location)
    except Exception:  # noqa: BLE001 - another process created it first
        return client.get_experiment_by_name(EXPERIMENT).experiment_id


class Tracker:
    """What stages log during a run; every curve point carries its `step`."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        _retry(lambda: mlflow.log_metrics(metrics, step=step))

    def log_params(self, params: dict[str, Any]) -> None:
        _retry(lambda: mlflow.log_params(params))

    def log_image(self, image: np.ndarray, artifact_file: str) -> None:
        """`image`: uint8 (H, W, 3) RGB, stored as PNG under the run's artifacts."""
        _retry(lambda: mlflow.log_image(image, artifact_file=artifact_file))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        _retry(lambda: mlflow.log_artifact(str(path), artifact_path))

    def log_table(self, rows: dict[str, list[Any]], artifact_file: str) -> None:
        _retry(lambda: mlflow.log_table(rows, artifact_file=artifact_file))

    def log_generator(self, model: torch.nn.Module, name: str = "generator") -> str:
        """Log the generator with a (-1, 3, -1, -1) float32 signature in [0, 1]; returns its URI."""
        model = model.float().cpu().eval()
        example = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)
        info = _retry(
            lambda: mlflow.pytorch.log_model(
                model,
                name=name,
                signature=IMAGE_SIGNATURE,
                input_example=example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy"],
                # Pickle, not torch.export's pt2: export specialises the batch size to the
                # example's. The pickled Generator class travels with the model via code_paths.
                serialization_format="pickle",
                code_paths=[str(Path(srgan.__file__).parent)],
            )
        )
        return info.model_uri


class _Disabled(Tracker):
    """Ranks other than 0 under torchrun: they train but log nothing."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_image(self, image: np.ndarray, artifact_file: str) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_table(self, rows: dict[str, list[Any]], artifact_file: str) -> None: ...
    def log_generator(self, model: torch.nn.Module, name: str = "generator") -> str:
        return ""


def _end_runs_of_dead_processes(experiment_id: str) -> None:
    """Mark KILLED the RUNNING runs that a process on this host started and that died without
    ending them (SIGKILL, OOM, power loss), so `mlflow ui` does not show them running forever."""
    client = MlflowClient()
    host = socket.gethostname()
    running = _retry(lambda: client.search_runs(
        [experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.host = '{host}'", max_results=1000
    ))
    for run in running:
        pid = int(run.data.tags.get("pid", "0"))
        if pid and not _alive(pid):
            _retry(lambda: client.set_terminated(run.info.run_id, status="KILLED"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def stage_run(stage: str, params: dict[str, Any], enabled: bool = True) -> Iterator[Tracker]:
    """One MLflow run for one stage execution, tagged `stage`, `git_commit` and `dvc_exp`.

    `params` are logged flat (`train.adv_weight`), together with the resolved runtime.
    """
    if not enabled:
        yield _Disabled()
        return
    mlflow.set_tracking_uri(tracking_uri())
    experiment_id = _retry(_experiment_id)
    root = project_root()
    _end_runs_of_dead_processes(experiment_id)
    tags = {"stage": stage, "git_commit": _git_commit(root), "dvc_exp": os.environ.get("DVC_EXP_NAME", ""),
            "host": socket.gethostname(), "pid": str(os.getpid())}
    run = _retry(lambda: mlflow.start_run(experiment_id=experiment_id, run_name=stage, tags=tags))
    status = "FAILED"
    try:
        tracker = Tracker()
        tracker.log_params(params)
        yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        _retry(lambda: mlflow.end_run(status=status))
        del run


def load_generator_from_uri(model_uri: str) -> torch.nn.Module:
    """Load a generator logged by `Tracker.log_generator` (a `runs:/…` or `models:/…` URI).

    An unknown run, a missing model or an unreachable store becomes one `SrganError` line
    naming the URI, not an MLflow traceback.
    """
    mlflow.set_tracking_uri(tracking_uri())
    try:
        return mlflow.pytorch.load_model(model_uri, map_location="cpu")
    except (MlflowException, OSError) as err:
        lines = str(err).strip().splitlines()
        raise SrganError(f"{model_uri}: cannot load the model ({(lines[0] if lines else type(err).__name__)[:200]})") from None
