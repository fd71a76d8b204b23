"""One MLflow run per stage execution (`stage_run`): started or reopened, ended as it ended.

A resumed execution (from a training checkpoint) reopens the run its interrupted execution logged
to, so one execution is one run with one curve; runs whose process died without ending them are
marked KILLED.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from srgan.core.errors import SrganError
from srgan.core.provenance import git_commit, process_alive
from srgan.core.runtime import project_root
from srgan.tracking.outbox import Outbox
from srgan.tracking.remote import patience_s
from srgan.tracking.store import find_experiment, open_store, retry, transient
from srgan.tracking.tracker import Disabled, Tracker, deliver


def _end_runs_of_dead_processes(experiment_id: str) -> None:
    """Mark KILLED the RUNNING runs that a process on this host started and that died without
    ending them (SIGKILL, OOM, power loss), so `make ui` does not show them running forever."""
    client = MlflowClient()
    host = socket.gethostname()
    running = retry(
        lambda: client.search_runs(
            [experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.host = '{host}'", max_results=1000
        )
    )
    for run in running:
        pid = int(run.data.tags.get("pid", "0"))
        if pid and not process_alive(pid):
            retry(lambda: client.set_terminated(run.info.run_id, status="KILLED"))


def _resumable(run_id: str | None, experiment_id: str, stage: str) -> dict[str, str] | None:
    """The params of the run an interrupted execution of `stage` logged to, if it still exists
    (not deleted, same experiment, same stage); else None and a new run is started."""
    if not run_id:
        return None
    try:
        run = retry(lambda: MlflowClient().get_run(run_id))
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
        yield Disabled()
        return
    run, logged = _start_run(stage, resume, system_metrics)
    run_id = run.info.run_id
    outbox = Outbox(lambda item, retry: deliver(run_id, item, retry), transient, patience_s())
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
            retry(lambda: mlflow.end_run(status=status))
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
    params it already holds (`open_store` asks a tracking server first)."""
    open_store()
    experiment_id = retry(find_experiment)
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
        run = retry(
            lambda: mlflow.start_run(
                experiment_id=experiment_id, run_name=run_name(tags), tags=tags, log_system_metrics=system_metrics
            )
        )
        return run, {}
    return retry(lambda: mlflow.start_run(run_id=resume, tags=tags, log_system_metrics=system_metrics)), logged


def run_name(tags: dict[str, str]) -> str:
    """What the UI's run list shows: stage · `dvc exp` name (or `workspace`) · short commit, e.g.
    `train · no-adv · 21ab5cb`, so runs of one stage in different experiments differ at a glance.
    Given when the run starts; a resumed execution reopens the run and keeps it."""
    return " · ".join((tags["stage"], tags["dvc_exp"] or "workspace", tags["git_commit"][:7]))


def _last_logged_step(run_id: str) -> int:
    """The latest step of any metric a (reopened) run holds, or -1."""
    client = MlflowClient()
    keys = retry(lambda: client.get_run(run_id)).data.metrics
    steps = [
        point.step for key in keys if not key.startswith("system/") for point in client.get_metric_history(run_id, key)
    ]
    return max(steps, default=-1)
