"""The generator as the MLflow models a server runs: `mlflow models serve` answers HTTP with them.

Each training stage logs its generator file as two pyfunc models (`log_served_models`), thin
adapters of the services of `srgan.inference.service`, which hold all the logic:
- `upscaler` (`ServedImages`), for people's images, the version the train stage registers: a
  column `image` of encoded images (PNG, JPEG, WebP, … bytes; base64 in JSON, MLflow's convention
  for binary columns) → a column `image` of PNG bytes, through `srgan upscale`'s tiled path;
- `generator` (`ServedTensors`), for programs that want tensors: float32 (n, 3, h, w) RGB in
  [0, 1] → float32 (n, 3, h·s, w·s), unclamped.

Both hold the generator as its checkpoint file (`srgan.models.checkpoint`), not a pickled
module, and srgan's code without the released weights (`code_paths`), so they load where srgan is
not installed. Each model is a script of MLflow's "models from code" that names its adapter and
its service (`SERVICES`). The services run in the server, not in the stage that logs them, so they
are named, not imported: editing them re-runs no stage (`dvc.yaml` lists what a stage imports), a
model keeps the code it was logged with, and this module stays below the floors they are built on.
A request the service refuses is answered with its status and `{"error_code": …, "message": "<one
line>"}`. An operator sets the service's settings when serving, through MLflow's `model_config`:
`SERVING_MODEL_CONFIG='{"max_output_pixels": 50000000}' mlflow models serve …`.
"""

from __future__ import annotations

import importlib
import io
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
from mlflow.exceptions import MlflowException
from mlflow.models.signature import ModelSignature
from mlflow.protos.databricks_pb2 import DEADLINE_EXCEEDED, INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE
from mlflow.types import ColSpec, DataType, Schema, TensorSpec
from PIL import Image

import srgan
from srgan.core.errors import Refused, exit_on_error
from srgan.tracking.store import retry

UPSCALER = "upscaler"  # the image model's name in its run (`runs:/<id>/upscaler`)
GENERATOR = "generator"  # the tensor model's
CHECKPOINT = "generator"  # the models' artifact: the generator file
SERVICES = {
    UPSCALER: ("srgan.inference.service", "ImageService"),
    GENERATOR: ("srgan.inference.service", "TensorService"),
}
IMAGE_SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec(DataType.binary, "image")]),
    outputs=Schema([ColSpec(DataType.binary, "image")]),
)
# Images in, images out: batch, height and width are free (-1).
TENSOR_SIGNATURE = ModelSignature(
    inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1))]),
    outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3, -1, -1))]),
)
# What the models import besides MLflow (which MLflow adds), for a server that builds its own environment.
_REQUIREMENTS = ("torch", "numpy", "pandas", "pillow", "tqdm", "pyyaml", "av")
_ERROR_CODES = {400: INVALID_PARAMETER_VALUE, 503: TEMPORARILY_UNAVAILABLE, 504: DEADLINE_EXCEEDED}


class Refusal(MlflowException):
    """A refusal as MLflow's server answers it. The server prepends the request's data (a
    DataFrame's repr, over several lines) to the message of any MlflowException the model
    raises; this one keeps its own line, which is all the client needs."""

    def __init__(self, line: str, error_code: int) -> None:
        self._line = line
        super().__init__(line, error_code=error_code)

    @property
    def message(self) -> str:
        return self._line

    @message.setter
    def message(self, _: str) -> None:
        """Ignore MLflow's rewrite (see the class)."""


@contextmanager
def _answered() -> Iterator[None]:
    """A service's `Refused` as the `Refusal` of its status."""
    try:
        yield
    except Refused as err:
        raise Refusal(str(err), _ERROR_CODES[err.status]) from None


class _Adapter(mlflow.pyfunc.PythonModel):
    """MLflow's face of a service class (`service`): built in the server from the model's
    generator file, its `model_config` and the server's request timeout."""

    def __init__(self, service: type) -> None:
        self.service = service

    @exit_on_error  # a bad setting stops the server with one line, as a command does
    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        checkpoint = Path(context.artifacts[CHECKPOINT])
        self.served = self.service(checkpoint, context.model_config or {}, MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get())


class ServedImages(_Adapter):
    """A column `image` of encoded images in, a column `image` of PNG bytes out."""

    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        with _answered():
            return pd.DataFrame({"image": self.served.upscale(list(model_input["image"]))})


class ServedTensors(_Adapter):
    """float32 (n, 3, h, w) in, float32 (n, 3, h·s, w·s) out."""

    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        with _answered():
            return self.served.upscale(model_input)


def log_served_models(checkpoint: Path) -> str:
    """Log the generator file `checkpoint` as the models `upscaler` and `generator` of the active
    run; returns the upscaler's URI (the version to register).

    Each model is a script naming its adapter and service (MLflow's "models from code"), not a
    pickled object. Each carries an example request (an 8×8 gray image), which MLflow checks by
    serving it once here and stores as the request body (`serving_input_example.json`)."""
    requirements = [f"{name}=={version(name)}" for name in _REQUIREMENTS]
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (128, 128, 128)).save(png, format="PNG")
    models = (
        (GENERATOR, ServedTensors, TENSOR_SIGNATURE, np.full((1, 3, 8, 8), 0.5, np.float32)),
        (UPSCALER, ServedImages, IMAGE_SIGNATURE, pd.DataFrame({"image": [png.getvalue()]})),
    )
    uris = {}
    with tempfile.TemporaryDirectory() as tmp:
        # srgan's code, not its released weights (13 MB) or caches: a model holds its own generator.
        code = Path(tmp) / "srgan"
        shutil.copytree(Path(srgan.__file__).parent, code, ignore=shutil.ignore_patterns("weights", "__pycache__"))
        for name, adapter, signature, example in models:
            module, service = SERVICES[name]
            # Its settings, logged as the model's `model_config`: MLflow takes at serving time only
            # the keys logged. Read where it runs anyway: MLflow serves the example here.
            defaults = getattr(importlib.import_module(module), service).DEFAULTS
            script = Path(tmp) / f"{name}.py"
            script.write_text(
                "from mlflow.models import set_model\n"
                f"from {adapter.__module__} import {adapter.__name__}\n"
                f"from {module} import {service}\n\n"
                f"set_model({adapter.__name__}({service}))\n"
            )
            with warnings.catch_warnings():
                # MLflow's own comparison of a DataFrame example's columns with a range, which
                # pandas 3 deprecates: every training stage printed it, and no user can act on it.
                warnings.filterwarnings("ignore", message="Operation with range is deprecated")
                info = retry(
                    partial(
                        mlflow.pyfunc.log_model,
                        name=name,
                        python_model=str(script),
                        artifacts={CHECKPOINT: str(checkpoint)},
                        signature=signature,
                        input_example=example,
                        model_config=defaults,
                        pip_requirements=requirements,
                        code_paths=[str(code)],
                    )
                )
            uris[name] = info.model_uri
    return uris[UPSCALER]
