"""Generators logged to MLflow, loaded by URI (`runs:/…`, `models:/…`) for `srgan upscale`,
`srgan export` and `pretrain.init`, with one-line errors instead of MLflow's tracebacks."""

from __future__ import annotations

import os

import mlflow
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from srgan.core.errors import SrganError
from srgan.core.runtime import project_root
from srgan.tracking.remote import tracking_uri
from srgan.tracking.store import retry, use_store


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
    use_store(tracking_uri())
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
    use_store(tracking_uri())
    name, _, rest = model_uri[len("models:/") :].partition("/")
    client = MlflowClient()
    if "@" in name:
        name, alias = name.split("@", 1)
        return retry(lambda: client.get_model_version_by_alias(name, alias)).run_id
    return retry(lambda: client.get_model_version(name, rest.split("/")[0])).run_id
