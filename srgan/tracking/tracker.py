"""What a stage logs to its MLflow run: the `Tracker`.

Curve points and images go through the run's `Outbox` (sent in the background, so training never
waits for the store); params, tags, tables, datasets, lineage and models are logged at once,
through `store.retry`.
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import numpy as np
import torch
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from srgan.core.provenance import file_sha256
from srgan.tracking.outbox import Item, Outbox
from srgan.tracking.remote import refusal, tracking_uri
from srgan.tracking.serving import log_served_models
from srgan.tracking.store import REGISTERED_MODEL, find_experiment, http_status, outage, retry

if TYPE_CHECKING:  # annotations only: mlflow.log_table takes the DataFrame as it is
    import pandas as pd


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
        status = http_status(fatal) if fatal is not None else None
        if status in (401, 403):
            return str(refusal(tracking_uri(), status))
        return outage(self._outbox.lost)

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
        retry(lambda: mlflow.log_params(params))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """A file, or a folder's files, under `artifact_path` (the artifacts' root if None)."""
        log = mlflow.log_artifacts if path.is_dir() else mlflow.log_artifact
        retry(lambda: log(str(path), artifact_path))

    def log_figure(self, image: np.ndarray, artifact_file: str) -> None:
        """`image`: uint8 (H, W, 3) RGB, as the file `artifact_file`, with no step. The UI's compare
        view lines up the files that the compared runs hold at the same path at the artifacts'
        root; `log_image` names its files by time and id, so only a fixed name is comparable."""
        retry(lambda: mlflow.log_image(image, artifact_file=artifact_file))

    def describe(self, markdown: str) -> None:
        """The run's description, rendered as Markdown at the top of its page in the UI."""
        self.set_tags({"mlflow.note.content": markdown})

    def log_table(self, table: dict[str, list[Any]] | pd.DataFrame, artifact_file: str) -> None:
        """A table the MLflow UI can sort and filter (a DataFrame, or columns by name)."""
        retry(lambda: mlflow.log_table(table, artifact_file=artifact_file))

    def set_tags(self, tags: dict[str, str]) -> None:
        retry(lambda: mlflow.set_tags(tags))

    def log_dataset(self, name: str, path: Path, digest: str, context: str) -> None:
        """Record `path` as an input of the run (the UI's dataset column): `digest` tells two
        versions of the data apart, `context` says what the run used it for."""
        with warnings.catch_warnings():
            # MLflow registers its local source twice and warns that a path matches both.
            warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways")
            source = resolve_dataset_source(path.resolve().as_uri())
        retry(lambda: mlflow.log_input(MetaDataset(source, name=name, digest=digest), context=context))

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
        experiment_id = retry(find_experiment)
        for role, path in inputs.items():
            key, sha = f"output.{path.name}.sha256", file_sha256(path)
            runs = retry(
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
        run = retry(lambda: MlflowClient().get_run(self.run_id))
        tags = {key: run.data.tags.get(key, "") for key in ("dvc_exp", "git_commit")}
        version = str(retry(lambda: mlflow.register_model(model_uri, REGISTERED_MODEL, tags=tags)).version)
        alias = tags["dvc_exp"]
        # MLflow's rule for aliases: word characters and '-', not `latest` or `v<number>`.
        if re.fullmatch(r"[\w-]+", alias) and not re.fullmatch(r"(?i)latest|v\d+", alias):
            retry(lambda: MlflowClient().set_registered_model_alias(REGISTERED_MODEL, alias, version))
        return version

    def tag_model_versions(self, run_id: str, tags: dict[str, str]) -> None:
        """Add `tags` to the registered versions of the generator that run `run_id` logged."""
        client = MlflowClient()
        for version in retry(lambda: client.search_model_versions(f"run_id = '{run_id}'")):
            for key, value in tags.items():
                retry(lambda: client.set_model_version_tag(version.name, version.version, key, value))

    def log_generator(self, checkpoint: Path) -> str:
        """Log the generator file as the models `mlflow models serve` runs (`serving`): images in
        (`upscaler`) and tensors in (`generator`); returns the upscaler's URI, the one to register."""
        return log_served_models(checkpoint)


def _now_ms() -> int:
    """The time a point was logged: fixed then, so a point sent twice is stored once (MLflow keys
    a metric point by key, step, timestamp and value)."""
    return int(time.time() * 1000)


def deliver(run_id: str, item: Item, retry: bool) -> None:
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


class Disabled(Tracker):
    """Ranks other than 0 under torchrun: they train but log nothing."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...
    def resend(self, items: list[Item]) -> None: ...
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_image(self, image: np.ndarray, key: str, step: int) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_figure(self, image: np.ndarray, artifact_file: str) -> None: ...
    def log_table(self, table: dict[str, list[Any]] | pd.DataFrame, artifact_file: str) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...
    def log_dataset(self, name: str, path: Path, digest: str, context: str) -> None: ...
    def record_output(self, path: Path) -> None: ...
    def tag_model_versions(self, run_id: str, tags: dict[str, str]) -> None: ...

    def link_inputs(self, inputs: dict[str, Path]) -> dict[str, str]:
        return {}

    def register_generator(self, model_uri: str) -> str:
        return ""

    def log_generator(self, checkpoint: Path) -> str:
        return ""
