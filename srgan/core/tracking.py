"""The only module that imports mlflow: one run per stage execution, in experiment `srgan`.

Tracking URI: `$MLFLOW_TRACKING_URI` if set, else `sqlite:///<project root>/mlflow.db`, with
artifacts under `<project root>/mlruns`. The project root comes from
`srgan.core.runtime.project_root()`, so DVC's temporary experiment copies write to the same store.

The store may go away while a stage runs (a tracking server or its database restarting): every
call is retried while the failure is one that waiting may cure, for up to
`$SRGAN_TRACKING_PATIENCE_S` seconds, and a training run's curve points and images go through an
`Outbox`, so training never waits for the store. A refused login or permission stops the stage
in one line.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlparse

import mlflow
import numpy as np
import torch
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.models.signature import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec

import srgan
from srgan.core.errors import SrganError
from srgan.core.outbox import Item, Outbox
from srgan.core.provenance import file_sha256, git_commit, process_alive
from srgan.core.remote import (
    EXPERIMENT,
    PATIENCE_ENV,
    check_server,
    is_server,
    patience_s,
    refusal,
    shown,
    tracking_uri,
)
from srgan.core.runtime import project_root

if TYPE_CHECKING:  # annotations only: mlflow.log_table takes the DataFrame as it is
    import pandas as pd

REGISTERED_MODEL = "srgan-generator"  # the train stage registers a version per run
T = TypeVar("T")

# Images in, images out: batch, height and width are free (-1); an inferred signature would pin
# the example's 8×8 size and reject other inputs at predict time.
IMAGE_SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1))]),
    outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1))]),
)


def _use_store(uri: str) -> None:
    """Point mlflow at `uri`; a new sqlite store is built under a temporary name first.

    MLflow creates a store's tables by a chain of migrations. A process killed in the middle
    (a stage SIGKILLed or Ctrl-C'd while it opened the first store) left a half-migrated
    mlflow.db ("table _alembic_tmp_experiments already exists") on which every later stage
    failed. Built beside it and linked into place, the store is complete or absent; of two
    processes building it at once, the first link wins and the other's copy is dropped.
    """
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.exists():
            temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                MlflowClient(f"sqlite:///{temporary}")  # builds and migrates the tables
                os.link(temporary, path)
            except FileExistsError:
                pass
            finally:
                temporary.unlink(missing_ok=True)
    mlflow.set_tracking_uri(uri)


def _retry(call: Callable[[], T]) -> T:
    """Run a store call, retrying a failure that waiting may cure (`_transient`) for up to
    `$SRGAN_TRACKING_PATIENCE_S`; past that, or at a refused login or permission, one line."""
    deadline, pause = 0.0, 0.2
    while True:
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - mlflow wraps store and HTTP errors in several types
            status = _http_status(err)
            if status in (401, 403):
                raise refusal(tracking_uri(), status) from None
            if not _transient(err):
                raise
            now = time.monotonic()
            deadline = deadline or now + patience_s()
            if now > deadline:
                failed = f"every attempt failed for {patience_s():.0f} s ({_first_line(err)})"
                raise SrganError(_outage(failed)) from None
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def _http_status(err: Exception) -> int | None:
    """The HTTP status a store's answer carried: from MLflow's message for an answer that was not
    MLflow's JSON (a proxy's or the auth app's 401/403), else from its error code."""
    found = re.search(r"failed with error code (\d{3})", str(err))
    if found:
        return int(found.group(1))
    return err.get_http_status_code() if isinstance(err, MlflowException) else None


def _transient(err: Exception) -> bool:
    """A failure that waiting may cure: sqlite's write lock taken by another run, a server that
    does not answer or answers 5xx or 429 (restarting, or its database restarting)."""
    if "locked" in str(err).lower():
        return True
    status = _http_status(err)
    if status is not None:
        return status >= 500 or status == 429
    return isinstance(err, OSError)


def _outage(what: str) -> str:
    return (
        f"{shown(tracking_uri())}: the tracking store is away: {what} ({PATIENCE_ENV}={patience_s():g}); "
        "run again once it answers"
    )


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


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
    """What stages log during a run; every curve point carries its `step`. `run_id`: the MLflow
    run it logs to, which a training checkpoint stores so a resumed execution continues it.
    Curve points and images go through `outbox` (sent in the background); the other calls are
    synchronous."""

    def __init__(self, run_id: str = "", logged_through: int = -1, outbox: Outbox | None = None) -> None:
        self.run_id = run_id
        # A resumed run already holds points up to this step, from the execution that was killed
        # after its last checkpoint: the resumed loop redoes those steps (with the same results,
        # the checkpoint and seeds being the same) and they are not logged twice.
        self.logged_through = logged_through
        self._outbox = outbox

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if step > self.logged_through:
            values = {key: float(value) for key, value in metrics.items()}
            self._put({"kind": "metrics", "step": step, "timestamp": _now_ms(), "metrics": values})

    def log_image(self, image: np.ndarray, key: str, step: int) -> None:
        """`image`: uint8 (H, W, 3) RGB, one step of the image series `key`, which the MLflow UI
        shows with a step slider and side by side across runs."""
        if step > self.logged_through:
            pixels = torch.from_numpy(np.array(image))  # a copy: plain data for a checkpoint
            self._put({"kind": "image", "step": step, "timestamp": _now_ms(), "key": key, "image": pixels})

    def _put(self, item: Item) -> None:
        assert self._outbox is not None, "a Tracker logs curves only inside stage_run"
        self._outbox.put(item)

    @property
    def lost(self) -> str:
        """Why the curves can no longer reach the store ("" while they can): the stage stops at
        its next log step with a checkpoint that holds what was not sent."""
        if self._outbox is None or not self._outbox.lost:
            return ""
        fatal = self._outbox.fatal
        status = _http_status(fatal) if fatal is not None else None
        if status in (401, 403):
            return str(refusal(tracking_uri(), status))
        return _outage(self._outbox.lost)

    def unsent(self) -> list[Item]:
        """The curve points and images the store has not confirmed, for the checkpoint."""
        return self._outbox.unsent() if self._outbox is not None else []

    def resend(self, items: list[Item]) -> None:
        """Send again what an interrupted execution's checkpoint held unsent; its steps count as
        logged, so the resumed loop does not log them a second time."""
        for item in items:
            self._put({**item, "resent": True})
            self.logged_through = max(self.logged_through, item["step"])

    def close(self) -> None:
        """Wait until the outbox is sent, or has given up (`lost`)."""
        if self._outbox is not None:
            self._outbox.close()

    def log_params(self, params: dict[str, Any]) -> None:
        _retry(lambda: mlflow.log_params(params))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        _retry(lambda: mlflow.log_artifact(str(path), artifact_path))

    def log_table(self, table: dict[str, list[Any]] | pd.DataFrame, artifact_file: str) -> None:
        """A table the MLflow UI can sort and filter (a DataFrame, or columns by name)."""
        _retry(lambda: mlflow.log_table(table, artifact_file=artifact_file))

    def set_tags(self, tags: dict[str, str]) -> None:
        _retry(lambda: mlflow.set_tags(tags))

    def log_dataset(self, name: str, path: Path, digest: str, context: str) -> None:
        """Record `path` as an input of the run (the UI's dataset column): `digest` tells two
        versions of the data apart, `context` says what the run used it for."""
        with warnings.catch_warnings():
            # MLflow registers its local source twice and warns that a path matches both.
            warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways")
            source = resolve_dataset_source(path.resolve().as_uri())
        _retry(lambda: mlflow.log_input(MetaDataset(source, name=name, digest=digest), context=context))

    def record_output(self, path: Path) -> None:
        """Tag the run as the writer of a model file: `output.<file name>.sha256`, which
        `link_inputs` of a later run looks up. The file's bytes stay free of run ids, so equal
        runs still write byte-identical models."""
        self.set_tags({f"output.{path.name}.sha256": file_sha256(path)})

    def link_inputs(self, inputs: dict[str, Path]) -> dict[str, str]:
        """Tag the run with the id of the run that wrote each input model (`lineage.<role>_run_id`),
        found by the file's sha256 among earlier runs' `record_output` tags (the latest if several
        wrote the same bytes). Returns the ids found; a file no run recorded gets no tag."""
        found: dict[str, str] = {}
        if not inputs:
            return found
        experiment_id = _retry(_experiment_id)
        for role, path in inputs.items():
            key, sha = f"output.{path.name}.sha256", file_sha256(path)
            runs = _retry(
                lambda: MlflowClient().search_runs(
                    [experiment_id],
                    filter_string=f"tags.`{key}` = '{sha}'",
                    order_by=["start_time DESC"],
                    max_results=1,
                )
            )
            if runs:
                found[f"lineage.{role}_run_id"] = runs[0].info.run_id
        self.set_tags(found)
        return found

    def register_generator(self, model_uri: str) -> str:
        """Register a logged generator as a new version of the registered model `srgan-generator`,
        tagged with the run's `dvc_exp` and `git_commit`; returns the version number. A `dvc exp
        run` experiment's name also becomes the version's alias, so `models:/srgan-generator@<name>`
        loads the experiment's generator (a rerun of the name moves the alias to its new version)."""
        run = _retry(lambda: MlflowClient().get_run(self.run_id))
        tags = {key: run.data.tags.get(key, "") for key in ("dvc_exp", "git_commit")}
        version = str(_retry(lambda: mlflow.register_model(model_uri, REGISTERED_MODEL, tags=tags)).version)
        alias = tags["dvc_exp"]
        # MLflow's rule for aliases: word characters and '-', not `latest` or `v<number>`.
        if re.fullmatch(r"[\w-]+", alias) and not re.fullmatch(r"(?i)latest|v\d+", alias):
            _retry(lambda: MlflowClient().set_registered_model_alias(REGISTERED_MODEL, alias, version))
        return version

    def tag_model_versions(self, run_id: str, tags: dict[str, str]) -> None:
        """Add `tags` to the registered versions of the generator that run `run_id` logged."""
        client = MlflowClient()
        for version in _retry(lambda: client.search_model_versions(f"run_id = '{run_id}'")):
            for key, value in tags.items():
                _retry(lambda: client.set_model_version_tag(version.name, version.version, key, value))

    def log_generator(self, model: torch.nn.Module, name: str = "generator") -> str:
        """Log the generator with a (-1, 3, -1, -1) float32 signature in [0, 1]; returns its URI."""
        model = model.float().cpu().eval()
        example = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)
        with _without_pickle_warning():
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


def _now_ms() -> int:
    """The time a point was logged: fixed then, so a point sent twice is stored once (MLflow keys
    a metric point by key, step, timestamp and value)."""
    return int(time.time() * 1000)


def _deliver(run_id: str, item: Item, retry: bool) -> None:
    """Send one outbox item to run `run_id`. An image is sent under a new name each time, so one
    whose earlier attempt may have reached the store is looked for first."""
    client = MlflowClient()
    step, timestamp = item["step"], item["timestamp"]
    if item["kind"] == "metrics":
        client.log_batch(run_id, metrics=[Metric(k, v, timestamp, step) for k, v in item["metrics"].items()])
        return
    key = item["key"]
    if (retry or item.get("resent")) and any(
        artifact.path.startswith(f"images/{key}+step+{step}+") for artifact in client.list_artifacts(run_id, "images")
    ):
        return
    client.log_image(run_id, item["image"].numpy(), key=key, step=step, timestamp=timestamp)


@contextmanager
def _without_pickle_warning() -> Iterator[None]:
    """Drop MLflow's warning that a pickled model runs code when loaded. Every training stage
    printed it, and the user cannot act on it: pickle is chosen on purpose (`log_generator`).
    MLflow's other warnings still show."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Saving pytorch model by Pickle")

    logger = logging.getLogger("mlflow.pytorch")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


class _Disabled(Tracker):
    """Ranks other than 0 under torchrun: they train but log nothing."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def resend(self, items: list[Item]) -> None: ...
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_image(self, image: np.ndarray, key: str, step: int) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_table(self, table: dict[str, list[Any]] | pd.DataFrame, artifact_file: str) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_dataset(self, name: str, path: Path, digest: str, context: str) -> None: ...
    def record_output(self, path: Path) -> None: ...
    def tag_model_versions(self, run_id: str, tags: dict[str, str]) -> None: ...

    def link_inputs(self, inputs: dict[str, Path]) -> dict[str, str]:
        return {}

    def register_generator(self, model_uri: str) -> str:
        return ""

    def log_generator(self, model: torch.nn.Module, name: str = "generator") -> str:
        return ""


def _end_runs_of_dead_processes(experiment_id: str) -> None:
    """Mark KILLED the RUNNING runs that a process on this host started and that died without
    ending them (SIGKILL, OOM, power loss), so `mlflow ui` does not show them running forever."""
    client = MlflowClient()
    host = socket.gethostname()
    running = _retry(
        lambda: client.search_runs(
            [experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.host = '{host}'", max_results=1000
        )
    )
    for run in running:
        pid = int(run.data.tags.get("pid", "0"))
        if pid and not process_alive(pid):
            _retry(lambda: client.set_terminated(run.info.run_id, status="KILLED"))


def _resumable(run_id: str | None, experiment_id: str, stage: str) -> dict[str, str] | None:
    """The params of the run an interrupted execution of `stage` logged to, if it still exists
    (not deleted, same experiment, same stage); else None and a new run is started."""
    if not run_id:
        return None
    try:
        run = _retry(lambda: MlflowClient().get_run(run_id))
    except MlflowException:
        return None
    usable = (
        run.info.experiment_id == experiment_id
        and run.info.lifecycle_stage == "active"
        and run.data.tags.get("stage") == stage
    )
    return dict(run.data.params) if usable else None


@contextmanager
def stage_run(
    stage: str,
    params: dict[str, Any],
    enabled: bool = True,
    resume: str | None = None,
    system_metrics: bool = False,
) -> Iterator[Tracker]:
    """One MLflow run for one stage execution, tagged `stage`, `git_commit` and `dvc_exp`.

    `params` are logged flat (`train.adv_weight`), together with the resolved runtime. `resume`:
    the id of the run an interrupted execution logged to (from its checkpoint); that run is
    reopened, so a resumed execution is one run with the whole curve. It ends FINISHED, FAILED,
    or KILLED when interrupted (Ctrl-C). `system_metrics`: MLflow samples CPU, memory, disk,
    network (and GPU where there is one) every 10 s (`$MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`)
    as `system/...` metrics, so a slow run can be told from a starved one.
    """
    if not enabled:
        yield _Disabled()
        return
    run, logged = _start_run(stage, resume, system_metrics)
    run_id = run.info.run_id
    outbox = Outbox(lambda item, retry: _deliver(run_id, item, retry), _transient, patience_s())
    tracker = Tracker(run_id, _last_logged_step(run_id) if logged else -1, outbox)
    status = "FAILED"
    try:
        # A reopened run keeps its params (MLflow refuses to change one); the checkpoint's hash
        # already guarantees the stage's own params are the same.
        tracker.log_params({key: value for key, value in params.items() if key not in logged})
        yield tracker
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.close()
        if not tracker.lost:
            _retry(lambda: mlflow.end_run(status=status))
        else:
            # The store is away or refuses: one attempt to end the run; the next execution on
            # this host marks it KILLED if it is left RUNNING (or resumes it).
            with suppress(Exception):
                mlflow.end_run(status="FAILED")
            if status == "FINISHED":
                raise SrganError(tracker.lost)
        del run


def _start_run(stage: str, resume: str | None, system_metrics: bool) -> tuple[mlflow.ActiveRun, dict[str, str]]:
    """Start a new run of `stage`, or reopen `resume` if it is still usable; return it and the
    params it already holds. A tracking server is asked first, with a short timeout, and its HTTP
    calls are not retried by MLflow itself (minutes of back-off per call): `_retry` retries them
    for as long as `$SRGAN_TRACKING_PATIENCE_S`."""
    uri = tracking_uri()
    check_server(uri)
    if is_server(uri):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    _use_store(uri)
    experiment_id = _retry(_experiment_id)
    _end_runs_of_dead_processes(experiment_id)
    tags = {
        "stage": stage,
        "git_commit": git_commit(project_root()),
        "dvc_exp": os.environ.get("DVC_EXP_NAME", ""),
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
    }
    logged = _resumable(resume, experiment_id, stage)
    # The monitor announces its start and stop (and a missing GPU) at INFO on every run.
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)
    if logged is None:
        run = _retry(
            lambda: mlflow.start_run(
                experiment_id=experiment_id, run_name=stage, tags=tags, log_system_metrics=system_metrics
            )
        )
        return run, {}
    return _retry(lambda: mlflow.start_run(run_id=resume, tags=tags, log_system_metrics=system_metrics)), logged


def _last_logged_step(run_id: str) -> int:
    """The latest step of any metric a (reopened) run holds, or -1."""
    client = MlflowClient()
    keys = _retry(lambda: client.get_run(run_id)).data.metrics
    steps = [
        point.step for key in keys if not key.startswith("system/") for point in client.get_metric_history(run_id, key)
    ]
    return max(steps, default=-1)


def require_store(what: str = "") -> None:
    """Refuse, in one line, to look things up in a store that does not exist: MLflow would create
    an empty one in the working directory."""
    if not os.environ.get("MLFLOW_TRACKING_URI") and not (project_root() / "mlflow.db").is_file():
        raise SrganError(
            f"{what + ': ' if what else ''}no MLflow store here ({project_root() / 'mlflow.db'} does not exist); "
            "run from the repository that ran the pipeline, or set MLFLOW_TRACKING_URI "
            "(e.g. sqlite:////path/to/repo/mlflow.db)"
        )


def load_generator_from_uri(model_uri: str) -> torch.nn.Module:
    """Load a generator logged by `Tracker.log_generator` (a `runs:/…` or `models:/…` URI).

    An unknown run, a missing model or an unreachable store becomes one `SrganError` line
    naming the URI, not an MLflow traceback. Without `$MLFLOW_TRACKING_URI` the store is the
    project's `mlflow.db` in the working directory: if there is none, the URI is refused before
    MLflow would create an empty store there.
    """
    require_store(model_uri)
    _use_store(tracking_uri())
    hint = "check the run id or version (`mlflow ui` lists them)"
    try:
        return mlflow.pytorch.load_model(model_uri, map_location="cpu")
    except (MlflowException, OSError) as err:
        lines = str(err).strip().splitlines()
        first = (lines[0] if lines else type(err).__name__)[:200]
        raise SrganError(f"{model_uri}: cannot load the model ({first}); {hint}") from None


def source_run_id(model_uri: str) -> str:
    """The id of the run that logged the model a `runs:/…` or `models:/name/version` (or
    `models:/name@alias`) URI names, for lineage; "" for another kind of URI."""
    if model_uri.startswith("runs:/"):
        return model_uri[len("runs:/") :].split("/")[0]
    if not model_uri.startswith("models:/"):
        return ""
    _use_store(tracking_uri())
    name, _, rest = model_uri[len("models:/") :].partition("/")
    client = MlflowClient()
    if "@" in name:
        name, alias = name.split("@", 1)
        return _retry(lambda: client.get_model_version_by_alias(name, alias)).run_id
    return _retry(lambda: client.get_model_version(name, rest.split("/")[0])).run_id


def prune_registry(keep: int, current: list[Path], dry_run: bool = False) -> tuple[list[str], dict[str, str]]:
    """Delete registered versions of `srgan-generator` beyond the `keep` newest, except those
    still pointed at: a version with an alias, the version of the run that wrote one of the
    `current` model files (by the sha256 its run recorded, as lineage finds it), and the version
    the newest evaluate run's `lineage.srgan_run_id` measured. The runs and their artifacts stay.

    Returns the versions deleted (or, with `dry_run`, that would be) and the kept ones beyond
    `keep` with the reason each was kept."""
    _use_store(tracking_uri())
    client = MlflowClient()
    versions = sorted(
        _retry(lambda: client.search_model_versions(f"name = '{REGISTERED_MODEL}'")),
        key=lambda v: int(v.version),
        reverse=True,
    )
    pinned: dict[str, str] = {}  # run id -> why its version stays
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        for path in (p for p in current if p.is_file()):
            key = f"output.{path.name}.sha256"
            runs = client.search_runs([experiment.experiment_id], f"tags.`{key}` = '{file_sha256(path)}'")
            pinned.update({run.info.run_id: f"wrote the current {path}" for run in runs})
        evaluations = client.search_runs(
            [experiment.experiment_id], "tags.stage = 'evaluate'", order_by=["start_time DESC"], max_results=1
        )
        for run in evaluations:
            if run.data.tags.get("lineage.srgan_run_id"):
                pinned.setdefault(run.data.tags["lineage.srgan_run_id"], "measured by the newest evaluate run")
    deleted, kept = [], {}
    for version in versions[keep:]:
        detail = _retry(lambda: client.get_model_version(REGISTERED_MODEL, version.version))
        number = str(version.version)
        if detail.aliases:
            kept[number] = f"alias {', '.join(detail.aliases)}"
        elif version.run_id in pinned:
            kept[number] = pinned[version.run_id]
        else:
            if not dry_run:
                _retry(lambda: client.delete_model_version(REGISTERED_MODEL, version.version))
            deleted.append(number)
    return deleted, kept
