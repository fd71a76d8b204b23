"""`srgan export`: the generator as ONNX, for runtimes other than PyTorch. (MLflow serves the
models the training stages log as they are: `srgan.tracking.serving`.)

The ONNX graph takes `lr_img`, float32 (N, 3, h, w) RGB in [0, 1], and returns `sr_img`, float32
(N, 3, h·s, w·s), unclamped like `Generator.forward` (callers clamp to [0, 1]). Batch, height
and width are dynamic. Exported by the TorchScript-based exporter (`dynamo=False`) at opset 17:
it needs neither `onnx` nor `onnxscript` at export time, and traces this convolutional model
(bicubic skip included, as a `Resize` op) without the torch.export machinery; onnxruntime agrees
with PyTorch to 1e-4 (tests/test_export.py).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from srgan.core.atomic import atomic_path
from srgan.core.errors import SrganError
from srgan.models.networks import Generator

ONNX_OPSET = 17


def check_onnx_target(model: str, output: Path) -> None:
    """Refuse, before the model is loaded, an output that `srgan export` must not write: a folder,
    a path under a file or under a broken link, a name without .onnx (the file would be ONNX
    whatever its name says), or the model file itself."""
    if output.is_dir():
        raise SrganError(f"{output}: is a folder; name the file to write, e.g. {output / 'generator.onnx'}")
    if output.suffix.lower() != ".onnx":
        raise SrganError(f"{output}: srgan export writes ONNX; name the file .onnx")
    blocker = next((parent for parent in output.parents if parent.exists() or parent.is_symlink()), None)
    if blocker is not None and not blocker.exists():
        raise SrganError(
            f"{output}: {blocker} is a broken link (points to the missing folder {os.readlink(blocker)}), not a folder"
        )
    if blocker is not None and not blocker.is_dir():
        raise SrganError(f"{output}: {blocker} is a file, not a folder")
    if output.exists() and Path(model).exists() and os.path.samefile(model, output):
        raise SrganError(f"{output}: is the model being exported; choose another output name")


def export_onnx(gen: Generator, path: str | os.PathLike[str]) -> None:
    """Write `gen` as an ONNX model at `path`, atomically, with dynamic batch, height and width.

    A folder it may not write in or a full disk is one line naming the file, as in `srgan upscale`."""
    gen = gen.float().cpu().eval()
    example = torch.rand(1, 3, 16, 16)  # any size: the axes below are declared dynamic
    try:
        with atomic_path(path, suffix=".onnx") as tmp, warnings.catch_warnings():
            # The TorchScript exporter's deprecation notices: it is chosen on purpose (see above).
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                gen,
                (example,),
                str(tmp),
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=["lr_img"],
                output_names=["sr_img"],
                dynamic_axes={
                    "lr_img": {0: "batch", 2: "height", 3: "width"},
                    "sr_img": {0: "batch", 2: "out_height", 3: "out_width"},
                },
            )
    except OSError as err:  # no permission, disk full
        raise SrganError(f"{path}: cannot write ({err.strerror or err})") from None
