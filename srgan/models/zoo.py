"""Generators by name: the released ones shipped inside the package, generator files, and MLflow
model URIs, behind one `load_model`; and the start of a training phase (`pretrain.init`).

A released generator is named, and its file is checked against its sha256 before it is loaded:
a damaged or replaced file is refused in one line instead of running with wrong weights. Their
model card (data, schedule, hardware, the command that reproduces them, scores on Set5, Set14 and
BSD100) is `srgan/models/weights/README.md`.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srgan.core.config import NO_START
from srgan.core.errors import SrganError

if TYPE_CHECKING:  # torch is imported where a model is loaded: `srgan --help` and the CLI's start stay light
    from torch import nn

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class Released:
    """A generator file in `WEIGHTS_DIR` and the sha256 of its bytes."""

    file: str
    sha256: str
    summary: str


RELEASED = {
    "srgan-t91bsd200-realistic": Released(
        file="srgan_t91bsd200_realistic_2400.pt",
        sha256="a4db9d5336912e7bb1ecdb9215238f26c927d4791c03776f1b4f2d87c4602a5a",
        summary="SRGAN ×4, nearest upsampler, T91 + BSD200 with realistic degradations (blur, noise, JPEG, H.264), "
        "srresnet-t91bsd200-realistic + 2,400 SRGAN updates on 2 CPU cores",
    ),
    "srgan-t91bsd200": Released(
        file="srgan_t91bsd200_gan4800.pt",
        sha256="54b62acb411df64c1f69857f53b32a36fb67ea507a42d82001ff0d833220d9ec",
        summary="SRGAN ×4, 16 blocks, T91 + BSD200, 6,600 SRResNet + 4,800 SRGAN updates on 2 CPU cores",
    ),
    "srresnet-t91bsd200": Released(
        file="srresnet_t91bsd200_6600.pt",
        sha256="9b5a96da5cb4cb62fe8ee3aaaab7a97765b1086b353e9466fb0f9af9ae46d29f",
        summary="SRResNet ×4 (pixel MSE), 16 blocks, T91 + BSD200, 6,600 updates on 2 CPU cores",
    ),
    "srresnet-t91bsd200-realistic": Released(
        file="srresnet_t91bsd200_realistic_1500.pt",
        sha256="7575d93d9e72b8342b3db183c48975799286c1878656748bc43c04fa4ce9dd95",
        summary="SRResNet ×4 (pixel MSE), nearest upsampler, T91 + BSD200 with realistic degradations, "
        "srresnet-t91bsd200's body + 1,500 updates on 2 CPU cores",
    ),
}
DEFAULT_RELEASED = "srgan-t91bsd200-realistic"


def released_path(name: str) -> Path:
    """The verified file of the released generator `name` (a key of `RELEASED`)."""
    entry = RELEASED[name]
    path = WEIGHTS_DIR / entry.file
    if not path.is_file():
        raise SrganError(f"{name}: its file {path} is missing; restore it with `git checkout -- {path}`")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != entry.sha256:
        raise SrganError(
            f"{path}: sha256 {digest[:12]}… is not the released {entry.sha256[:12]}…; the file is damaged or "
            f"was replaced; restore it with `git checkout -- {path}` or pass another model with --model"
        )
    return path


def is_model_uri(spec: str) -> bool:
    """`runs:/…`, `models:/…` and other `scheme:/…` MLflow URIs, as opposed to a checkpoint path."""
    return re.match(r"[A-Za-z][A-Za-z0-9+.-]+:/", spec) is not None


def load_model(spec: str) -> nn.Module:
    """A generator, in eval mode, from a released name (its sha256 checked), a checkpoint file
    (`srgan.models.checkpoint`) or an MLflow model URI.

    The URI is resolved by `srgan.tracking.uris` (only `srgan.tracking` imports mlflow), and only when
    asked for: importing mlflow costs seconds.
    """
    from srgan.models.checkpoint import load_generator
    from srgan.models.networks import ARCHITECTURES

    if spec in RELEASED:
        return load_generator(released_path(spec))
    if not is_model_uri(spec):
        if not Path(spec).is_file():
            raise SrganError(_missing_model(spec))
        return load_generator(spec)
    from srgan.tracking.uris import load_generator_from_uri

    gen = load_generator_from_uri(spec, load_generator)
    if not isinstance(gen, tuple(ARCHITECTURES.values())):
        raise SrganError(
            f"{spec}: is a {type(gen).__name__}, not one of srgan's generators ({', '.join(ARCHITECTURES)})"
        )
    return gen.eval()


def _missing_model(spec: str) -> str:
    """What to say of a model that is not there: a bare name (no folder, no extension), such as
    `srgan-x2`, was meant as a released model, so they are listed; a path is a missing file, which
    for the pipeline's own models means `dvc repro` has not run."""
    if "/" not in spec and os.sep not in spec and not Path(spec).suffix:
        return f"{spec}: neither a released model ({', '.join(RELEASED)}) nor an existing file"
    return f"{spec}: file not found (`dvc repro` writes models/srgan.pt and models/srresnet.pt)"


@dataclass(frozen=True)
class Start:
    """The generator a training phase starts from, and what identifies it: its `file` (released or a
    checkpoint; None for an MLflow URI), `sha256` of that file (for a URI, of its weights as srgan
    writes a generator file), and `tags` for the run that starts from it (`init.spec`,
    `init.sha256`, and `lineage.init_run_id` for a URI)."""

    spec: str
    generator: nn.Module
    sha256: str
    file: Path | None  # None for an MLflow URI
    tags: dict[str, str] = field(default_factory=dict)


def load_start(spec: str, expect: dict[str, Any]) -> Start | None:
    """The start `pretrain.init` names (None for `none`), refused in one line naming the key
    unless its architecture and shapes are those of `expect` (the `model.*` generator config).

    A generator file of another `upsampler` is a start too: the new generator takes its every
    weight outside the ×2 stages (`body_of`), so a released sub-pixel SRResNet starts a nearest one
    without learning its 16 blocks again."""
    if spec == NO_START:
        return None
    try:
        return _load_start(spec, expect)
    except SrganError as err:
        raise SrganError(f"params: pretrain.init={spec}: {err}") from None


def _load_start(spec: str, expect: dict[str, Any]) -> Start:
    import torch

    from srgan.models.checkpoint import GENERATOR_FORMAT, cpu_state_dict, load, load_generator, stored_config
    from srgan.models.networks import build_generator

    if spec in RELEASED or not is_model_uri(spec):
        path = released_path(spec) if spec in RELEASED else Path(spec)
        found = stored_config(load(path, GENERATOR_FORMAT).get("config") or {})
        if {**found, "upsampler": None} != {**expect, "upsampler": None}:
            raise SrganError(f"holds {_shape(found)}, but model.* asks for {_shape(expect)}")
        digest = _sha256(path.read_bytes())
        tags = {"init.spec": spec, "init.sha256": digest}
        if found["upsampler"] != expect["upsampler"]:  # the body carries over: `body_of`
            tags["init.upsampler"] = f"{found['upsampler']} (its upsampler not carried over)"
        return Start(spec, load_generator(path), digest, path, tags)
    gen = load_model(spec)
    wanted = build_generator(expect)
    shapes = {k: v.shape for k, v in cpu_state_dict(gen).items()}
    fits = type(gen) is type(wanted) and shapes == {k: v.shape for k, v in wanted.state_dict().items()}
    if not (fits and (gen.scale, gen.bicubic_skip) == (expect["scale"], expect["bicubic_skip"])):
        raise SrganError(f"holds a {type(gen).__name__} of other shapes, but model.* asks for {_shape(expect)}")
    buffer = io.BytesIO()  # its weights as a generator file, so equal weights give one sha256
    torch.save({"format": GENERATOR_FORMAT, "config": expect, "state_dict": cpu_state_dict(gen)}, buffer)
    digest = _sha256(buffer.getvalue())
    from srgan.tracking.uris import source_run_id

    tags = {"init.spec": spec, "init.sha256": digest, "lineage.init_run_id": source_run_id(spec)}
    return Start(spec, gen, digest, None, tags)


def body_of(start: nn.Module, gen: nn.Module) -> dict[str, Any]:
    """The entries of `start`'s state dict that `gen` has under the same name and shape: all of them
    for equal architectures, all but the ×2 stages' convolutions across upsamplers (whose PReLUs
    sit at the same places)."""
    wanted = gen.state_dict()
    return {k: v for k, v in start.state_dict().items() if k in wanted and wanted[k].shape == v.shape}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _shape(config: dict[str, Any]) -> str:
    """A generator config in the params' own words: `arch=srresnet, scale=4, blocks=16, …`."""
    keys = ("arch", "scale", "blocks", "channels", "bicubic_skip", "upsampler")
    return ", ".join(f"{key}={str(config.get(key)).lower()}" for key in keys)
