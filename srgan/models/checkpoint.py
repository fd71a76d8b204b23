"""Model files and training checkpoints: `state_dict`s plus the config that built them.

Everything is written atomically (temp file + rename) and read with `weights_only=True`, so a
killed write never leaves a half file and a crafted pickle cannot run code on load.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch

from srgan.core.atomic import write_bytes
from srgan.core.config import Params
from srgan.core.errors import SrganError
from srgan.models.networks import ARCHITECTURES, DEFAULT_ARCH, DEFAULT_UPSAMPLER, Discriminator, build_generator

GENERATOR_FORMAT = "srgan-generator-v1"
DISCRIMINATOR_FORMAT = "srgan-discriminator-v1"
TRAINING_FORMAT = "srgan-training-v1"


def save(path: str | Path, payload: dict[str, Any]) -> None:
    """Atomically `torch.save` a dict of tensors, numbers, strings, lists and dicts.

    Serialised in memory first: `torch.save` to a path names the archive's inner folder after
    the (random) temporary file, which would make equal weights give different file hashes.
    """
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes(path, buffer.getvalue())


def load(path: str | Path, expected_format: str) -> dict[str, Any]:
    """Load a file saved by `save`, refusing anything that is not plain data of the right kind."""
    path = Path(path)
    if not path.is_file():
        raise SrganError(f"{path}: file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - random bytes, JSON, a truncated zip, a crafted pickle...
        # PyTorch's own message advises `weights_only=False`, which would run a crafted file's
        # code: it is not passed on. A pickle naming Python objects ("unsupported GLOBAL") is
        # told apart from bytes that are no pickle at all.
        objects = isinstance(err, pickle.UnpicklingError) and "GLOBAL" in str(err)
        what = (
            "it holds Python objects, not plain weights; refused without running them"
            if objects
            else "not a readable PyTorch file"
        )
        raise SrganError(f"{path}: is not an srgan checkpoint ({what})") from None
    found = payload.get("format") if isinstance(payload, dict) else None
    if found != expected_format:
        kind = f"a {found} file" if isinstance(found, str) and found.startswith("srgan-") else "not an srgan checkpoint"
        raise SrganError(f"{path}: is {kind}, expected {expected_format}")
    return payload


def generator_config(
    scale: int,
    blocks: int,
    channels: int,
    bicubic_skip: bool,
    arch: str = DEFAULT_ARCH,
    upsampler: str = DEFAULT_UPSAMPLER,
) -> dict[str, Any]:
    """What a generator file stores to rebuild its model: the architecture's name and arguments."""
    return {
        "arch": arch,
        "scale": scale,
        "blocks": blocks,
        "channels": channels,
        "bicubic_skip": bicubic_skip,
        "upsampler": upsampler,
    }


def stored_config(config: dict[str, Any]) -> dict[str, Any]:
    """A file's stored config with the entries it predates filled in: a file written before
    configs named their architecture holds an srresnet, and one written before they named the
    upsampler (the released generators) a sub-pixel one."""
    return {"arch": DEFAULT_ARCH, "upsampler": DEFAULT_UPSAMPLER, **config}


def params_config(params: Params) -> dict[str, Any]:
    """The generator config the `scale` and `model.*` params ask for."""
    m = params.model
    return generator_config(params.scale, m.blocks, m.channels, m.bicubic_skip, m.arch, m.upsampler)


def save_generator(path: str | Path, model: torch.nn.Module, config: dict[str, Any]) -> None:
    save(path, {"format": GENERATOR_FORMAT, "config": config, "state_dict": cpu_state_dict(model)})


def load_generator(path: str | Path, expect: dict[str, Any] | None = None) -> torch.nn.Module:
    """Rebuild the generator from its own stored config (`stored_config`); `expect` refuses
    another architecture."""
    payload = load(path, GENERATOR_FORMAT)
    config = payload.get("config")
    if isinstance(config, dict):
        config = stored_config(config)
        if config["arch"] not in ARCHITECTURES:
            raise SrganError(
                f"{path}: architecture {config['arch']!r} is not one of this srgan's ({', '.join(ARCHITECTURES)})"
            )
    if expect is not None:
        check_config(path, config if isinstance(config, dict) else {}, expect)
    try:
        model = build_generator(config)
        model.load_state_dict(payload["state_dict"])
    except (TypeError, ValueError, RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SrganError(
            f"{path}: its weights do not fit its stored config {config} ({first[:120]}); "
            "the file was altered or written by other code"
        ) from None
    return model.eval()


def save_discriminator(path: str | Path, model: Discriminator, config: dict[str, Any]) -> None:
    """`config`: the `Discriminator` arguments (channels, norm) that rebuild it."""
    save(path, {"format": DISCRIMINATOR_FORMAT, "config": config, "state_dict": cpu_state_dict(model)})


def check_config(path: str | Path, found: dict[str, Any], expected: dict[str, Any]) -> None:
    """Refuse a checkpoint built for another architecture or scale, saying which key differs."""
    for key, value in expected.items():
        if found.get(key) != value:
            raise SrganError(
                f"{path}: built with {key}={found.get(key)!r}, but the params ask for {key}={value!r}; "
                "delete the file or change the params to match"
            )


def cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights as CPU tensors, unwrapped from DDP / torch.compile, to load into a plain module."""
    # Unwrap DDP / torch.compile wrappers so files load into a plain module.
    model = getattr(model, "module", model)
    model = getattr(model, "_orig_mod", model)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}
