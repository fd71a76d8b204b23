"""Generators logged to MLflow, loaded by URI (`runs:/…`, `models:/…`) for `srgan upscale`,
`srgan eval`, `srgan export` and `pretrain.init`, with one-line errors instead of MLflow's
tracebacks, and within seconds, not minutes, when the tracking server does not answer."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import mlflow
import torch
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking import MlflowClient

from srgan.core.errors import SrganError
from srgan.core.runtime import project_root
from srgan.tracking.serving import CHECKPOINT
from srgan.tracking.store import open_store, retry


def require_store(what: str = "") -> None:
    """Refuse, in one line, to look things up in a store that does not exist: MLflow would create
    an empty one in the working directory."""
    if not os.environ.get("MLFLOW_TRACKING_URI") and not (project_root() / "mlflow.db").is_file():
        raise SrganError(
            f"{what + ': ' if what else ''}no MLflow store here ({project_root() / 'mlflow.db'} does not exist); "
            "run from the repository that ran the pipeline, or set MLFLOW_TRACKING_URI "
            "(e.g. sqlite:////path/to/repo/mlflow.db)"
        )


def load_generator_from_uri(model_uri: str, load_file: Callable[[Path], torch.nn.Module]) -> torch.nn.Module:
    """Load a generator the training stages logged (a `runs:/…` or `models:/…` URI): one of the
    served models (`srgan.tracking.serving`), whose generator file `load_file` reads
    (`srgan.models.checkpoint.load_generator`, a floor above this one), or a pickled PyTorch
    module as stages logged it before them.

    An unknown run, a missing model or an unreachable store becomes one `SrganError` line
    naming the URI, not an MLflow traceback. Without `$MLFLOW_TRACKING_URI` the store is the
    project's `mlflow.db` in the working directory: if there is none, the URI is refused before
    MLflow would create an empty store there.
    """
    _open_store_for(model_uri)
    hint = "check the run id or version (`make ui` and `srgan registry list` list them)"
    try:
        with tempfile.TemporaryDirectory() as tmp:  # the model's folder, fetched once
            model = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
            flavors = Model.load(model).flavors
            if "pytorch" in flavors:
                return mlflow.pytorch.load_model(str(model), map_location="cpu")
            return load_file(model / flavors["python_function"]["artifacts"][CHECKPOINT]["path"])
    except (MlflowException, OSError, KeyError) as err:
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
    _open_store_for(model_uri)
    name, _, rest = model_uri[len("models:/") :].partition("/")
    client = MlflowClient()
    if "@" in name:
        name, alias = name.split("@", 1)
        return retry(lambda: client.get_model_version_by_alias(name, alias)).run_id
    return retry(lambda: client.get_model_version(name, rest.split("/")[0])).run_id


def _open_store_for(model_uri: str) -> None:
    """Open the store that holds `model_uri` (`open_store`): a missing local store, or a tracking
    server that is down, mistyped or refuses the login, is one line naming the model URI and the
    server, within seconds; MLflow's own HTTP retries would hang silently for minutes."""
    require_store(model_uri)
    try:
        open_store()
    except SrganError as err:
        raise SrganError(f"{model_uri}: {err}") from None
