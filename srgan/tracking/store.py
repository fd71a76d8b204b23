"""The MLflow store a stage talks to: opened safely, and waited for while it is away.

Tracking URI: `$MLFLOW_TRACKING_URI` if set, else `sqlite:///<project root>/mlflow.db`, with
artifacts under `<project root>/mlruns` (`remote.tracking_uri`). The project root comes from
`srgan.core.runtime.project_root()`, so DVC's temporary experiment copies write to the same store.

The store may go away while a stage runs (a tracking server or its database restarting): every
call goes through `retry`, which retries a failure that waiting may cure for up to
`$SRGAN_TRACKING_PATIENCE_S` seconds, and turns a refused login or permission into one line.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from srgan.core.errors import SrganError
from srgan.core.runtime import project_root
from srgan.tracking.remote import (
    EXPERIMENT,
    PATIENCE_ENV,
    check_server,
    is_server,
    patience_s,
    refusal,
    shown,
    tracking_uri,
)

REGISTERED_MODEL = "srgan-generator"  # the train stage registers a version per run
# MLflow's record of an experiment's kind (its UI writes the same tag when a user picks one).
# MLflow 3.17's UI chooses its pages from a URL parameter instead (`srgan.tracking.ui.runs_url`).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# MLflow logs a dataset by looking for its row, then inserting it: two runs logging one dataset at
# once (queued experiments) both insert, and the second breaks the unique key; tried again, it finds
# the row. sqlite's and PostgreSQL's words, as a local store raises them or a server relays them.
RACED_INSERT = re.compile(r"UNIQUE constraint failed|duplicate key value violates unique constraint")
T = TypeVar("T")


def use_store(uri: str) -> None:
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


def open_store(uri: str | None = None) -> str:
    """Point mlflow at `uri` (default `tracking_uri()`) for a command that reads or writes runs,
    and return it. A tracking server is asked first, with a short timeout (`check_server`): down,
    mistyped or refusing the login, it is one line within seconds. Its HTTP calls are then not
    retried by MLflow itself (minutes of back-off per call, silent): `retry` retries a stage's
    calls for as long as `$SRGAN_TRACKING_PATIENCE_S`."""
    uri = uri or tracking_uri()
    check_server(uri)
    if is_server(uri):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    use_store(uri)
    return uri


def retry(call: Callable[[], T]) -> T:
    """Run a store call, retrying a failure that waiting may cure (`transient`) for up to
    `$SRGAN_TRACKING_PATIENCE_S`; past that, or at a refused login or permission, one line."""
    deadline, pause = 0.0, 0.2
    while True:
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - mlflow wraps store and HTTP errors in several types
            status = http_status(err)
            if status in (401, 403):
                raise refusal(tracking_uri(), status) from None
            if not transient(err):
                raise
            now = time.monotonic()
            deadline = deadline or now + patience_s()
            if now > deadline:
                failed = f"every attempt failed for {patience_s():.0f} s ({first_line(err)})"
                raise SrganError(outage(failed)) from None
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def http_status(err: Exception) -> int | None:
    """The HTTP status a store's answer carried: from MLflow's message for an answer that was not
    MLflow's JSON (a proxy's or the auth app's 401/403), else from its error code."""
    found = re.search(r"failed with error code (\d{3})", str(err))
    if found:
        return int(found.group(1))
    return err.get_http_status_code() if isinstance(err, MlflowException) else None


def transient(err: Exception) -> bool:
    """A failure that waiting may cure: sqlite's write lock taken by another run, a row another
    run inserted first (`RACED_INSERT`), a server that does not answer or answers 5xx or 429
    (restarting, or its database restarting)."""
    if "locked" in str(err).lower() or RACED_INSERT.search(str(err)):
        return True
    status = http_status(err)
    if status is not None:
        return status >= 500 or status == 429
    return isinstance(err, OSError)


def outage(what: str) -> str:
    return (
        f"{shown(tracking_uri())}: the tracking store is away: {what} ({PATIENCE_ENV}={patience_s():g}); "
        "run again once it answers"
    )


def first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def find_experiment() -> str:
    """The id of experiment `srgan`, created if absent, and marked as model training
    (`EXPERIMENT_KIND`), also when a store made before that mark holds it."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        for key, value in EXPERIMENT_KIND.items():
            if experiment.tags.get(key) != value:
                client.set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id
    # A local store keeps the artifacts beside it (<root>/mlruns); a tracking server chooses their
    # place itself (mlflow-artifacts:/, proxied, when it serves them), readable from every machine.
    remote = urlparse(tracking_uri()).scheme in ("http", "https")
    location = None if remote else (project_root() / "mlruns").as_uri()
    try:
        return client.create_experiment(EXPERIMENT, artifact_location=location, tags=EXPERIMENT_KIND)
    except Exception:  # noqa: BLE001 - another process created it first
        return client.get_experiment_by_name(EXPERIMENT).experiment_id
