"""`params.yaml` parsed into frozen dataclasses that reject unknown keys and ill-typed values.

A typo in `dvc exp run -S train.adv_wieght=…` must fail before any work starts, naming the key,
instead of silently training with a default. Each section here mirrors one section of
`params.yaml`; the comments on the keys live there, next to the values users edit. A key left
out of a params file gets the default written here, which equals the committed `params.yaml`'s
value (tests/test_config.py holds the two equal, key by key).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from srgan.core.errors import SrganError

# Each list of choices is written once, here or in the module named, and everything else derives
# from it: the params' allowed values below, the CLI's choices, the code's tables.
DEVICES = ("auto", "cpu", "cuda")  # runtime.device, `srgan … --device`
PRECISIONS = ("auto", "fp32", "bf16")  # runtime.precision, `srgan … --precision`
# train.content_loss: the VGG19 convs whose features each content loss compares, with their
# weights (none: pixel MSE). vgg22 / vgg54 are the paper's φ2,2 / φ5,4; vgg_multi is Real-ESRGAN's
# five-layer set. `srgan.training.losses` builds them.
CONTENT_LOSSES: dict[str, dict[str, float]] = {
    "mse": {},
    "vgg22": {"conv2_2": 1.0},
    "vgg54": {"conv5_4": 1.0},
    "vgg_multi": {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0},
}
# train.vgg_activation: features after the conv's ReLU (the paper) or before it (ESRGAN §3.3:
# denser features, no brightness shift).
VGG_ACTIVATIONS = ("after", "before")
CONTENT_LOSS_NAMES = tuple(CONTENT_LOSSES)
# evaluate.convention, `srgan eval --convention`: each metric convention as the fields of
# `srgan.core.metrics.Convention` other than its name and border crop (the scale). matlab: how the
# published MATLAB numbers were made. rgb: all channels. basicsr: how BasicSR measures (unrounded
# Y) and makes its LR and bicubic images (in float, rounded once).
CONVENTION_FIELDS: dict[str, dict[str, bool]] = {
    "matlab": {"y_channel": True, "round_y": True},
    "rgb": {"y_channel": False, "round_y": False},
    "basicsr": {"y_channel": True, "round_y": False, "resize_in_float": True},
}
CONVENTIONS = tuple(CONVENTION_FIELDS)
# pretrain.init: the SRResNet phase from scratch (the paper's); its other values name a generator
# (`srgan.models.zoo.load_start`).
NO_START = "none"
DEFAULT_CONVENTION = "matlab"


def _positive(value: float) -> bool:
    return value > 0


def _non_negative(value: float) -> bool:
    return value >= 0


def _fraction(value: float) -> bool:
    return 0 < value < 1


def _check(rule: typing.Callable[[Any], bool], text: str) -> Any:
    """Field metadata: a value rule and the words that describe it in an error."""
    return {"rule": rule, "text": text}


POSITIVE = _check(_positive, "must be > 0")
NON_NEGATIVE = _check(_non_negative, "must be >= 0")
FRACTION = _check(_fraction, "must be in (0, 1): training validates on held-out images")


@dataclass(frozen=True)
class DataParams:
    train: str = "sample"
    eval: tuple[str, ...] = ("sample",)


@dataclass(frozen=True)
class DownloadParams:
    max_unpacked_gb: float = field(default=50.0, metadata=POSITIVE)


@dataclass(frozen=True)
class PreprocessParams:
    hr_size: int = field(default=256, metadata=POSITIVE)
    stride: int = field(default=128, metadata=POSITIVE)
    val_fraction: float = field(default=0.1, metadata=FRACTION)
    max_val_patches: int = field(default=16, metadata=POSITIVE)
    max_pixels: int = field(default=100_000_000, metadata=POSITIVE)
    shard_size: int = field(default=512, metadata=POSITIVE)
    workers: int = field(default=0, metadata=NON_NEGATIVE)
    degradation: Literal["bicubic", "realistic"] = "bicubic"  # srgan.data.degrade.REALISTIC


@dataclass(frozen=True)
class ModelParams:
    # Its names are `srgan.models.networks.ARCHITECTURES` (a torch module, so not imported here):
    # the params stage checks the name with `check_architecture`, before any other stage runs.
    arch: str = "srresnet"
    blocks: int = field(default=16, metadata=POSITIVE)
    channels: int = field(default=64, metadata=POSITIVE)
    bicubic_skip: bool = True
    upsampler: Literal["pixelshuffle", "nearest"] = "pixelshuffle"  # srgan.models.networks.UPSAMPLERS
    d_channels: int = field(default=64, metadata=POSITIVE)
    d_norm: Literal["batch", "spectral"] = "batch"


@dataclass(frozen=True)
class RuntimeParams:
    device: Literal[DEVICES] = "auto"
    precision: Literal[PRECISIONS] = "auto"
    nproc: int = field(default=1, metadata=POSITIVE)
    workers: int = field(default=1, metadata=NON_NEGATIVE)
    threads: Literal["auto"] | int = field(
        default="auto", metadata=_check(lambda v: v == "auto" or v >= 1, "must be auto or a thread count >= 1")
    )
    compile: bool = False


@dataclass(frozen=True)
class PretrainParams:
    init: str = "srresnet-t91bsd200"  # NO_START or a generator: srgan.models.zoo.load_start checks it
    steps: int = field(default=0, metadata=NON_NEGATIVE)  # 0: the start as it is (Params checks there is one)
    batch_size: int = field(default=16, metadata=POSITIVE)
    crop_size: int = field(default=96, metadata=POSITIVE)
    learning_rate: float = field(default=2e-4, metadata=POSITIVE)
    decay_at: float = field(default=0.8, metadata=_check(lambda v: 0 < v <= 1, "must be in (0, 1]"))
    icnr: bool = True
    val_every: int = field(default=100, metadata=POSITIVE)
    checkpoint_every: int = field(default=100, metadata=POSITIVE)


@dataclass(frozen=True)
class TrainParams:
    steps: int = field(default=300, metadata=POSITIVE)
    batch_size: int = field(default=8, metadata=POSITIVE)
    crop_size: int = field(default=96, metadata=POSITIVE)
    learning_rate: float = field(default=1e-4, metadata=POSITIVE)
    decay_at: float = field(default=1.0, metadata=_check(lambda v: 0 < v <= 1, "must be in (0, 1]"))
    content_loss: Literal[CONTENT_LOSS_NAMES] = "vgg_multi"
    vgg_activation: Literal[VGG_ACTIVATIONS] = "after"
    vgg_weights: str = "oxford"
    pixel_weight: float = field(default=0.0, metadata=NON_NEGATIVE)
    adv_weight: float = field(default=10.0, metadata=NON_NEGATIVE)
    freeze_bn: bool = False
    d_steps: int = field(default=1, metadata=POSITIVE)
    val_every: int = field(default=20, metadata=POSITIVE)
    checkpoint_every: int = field(default=20, metadata=POSITIVE)


@dataclass(frozen=True)
class EvaluateParams:
    figures: int = field(default=3, metadata=NON_NEGATIVE)
    figure_crop: int = field(default=128, metadata=POSITIVE)
    convention: Literal[CONVENTIONS] = "matlab"


@dataclass(frozen=True)
class Params:
    seed: int = 0
    scale: int = field(default=4, metadata=_check(lambda v: v in (2, 4, 8), "must be 2, 4 or 8"))
    data: DataParams = DataParams()
    download: DownloadParams = DownloadParams()
    preprocess: PreprocessParams = PreprocessParams()
    model: ModelParams = ModelParams()
    runtime: RuntimeParams = RuntimeParams()
    pretrain: PretrainParams = PretrainParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()

    def __post_init__(self) -> None:
        if self.pretrain.steps == 0 and self.pretrain.init == NO_START:
            raise SrganError(
                "params: pretrain.steps=0 keeps the start as it is, but pretrain.init=none starts from scratch; "
                "set pretrain.steps > 0 or pretrain.init to a generator"
            )
        if self.preprocess.hr_size % self.scale:
            raise SrganError(
                f"params: preprocess.hr_size={self.preprocess.hr_size} must be a multiple of scale={self.scale}"
            )
        for name in ("pretrain", "train"):
            crop = getattr(self, name).crop_size
            if crop % self.scale or crop > self.preprocess.hr_size:
                raise SrganError(
                    f"params: {name}.crop_size={crop} must be a multiple of scale={self.scale} "
                    f"and at most preprocess.hr_size={self.preprocess.hr_size}"
                )


def _type_name(kind: Any) -> str:
    origin = get_origin(kind)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(kind))
    return getattr(kind, "__name__", str(kind))


def _coerce(key: str, kind: Any, value: Any) -> Any:
    """Check `value` against the annotation `kind`; return it in the dataclass's own form."""
    origin = get_origin(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise SrganError(f"params: {key} must be a mapping of keys, got {value!r}")
        return _build(kind, value, key + ".")
    if origin is Literal:
        if value not in get_args(kind):
            raise SrganError(f"params: {key}={value!r} is not one of {_type_name(kind)}")
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in get_args(kind):
            return None
        options = [a for a in get_args(kind) if a is not type(None)]
        if len(options) == 1:
            return _coerce(key, options[0], value)
        for option in options:
            try:
                return _coerce(key, option, value)
            except SrganError:
                pass
        names = " or ".join("an integer" if o is int else _type_name(o) for o in options)
        raise SrganError(f"params: {key} must be {names}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not value:
            raise SrganError(f"params: {key} must be a non-empty list, got {value!r}")
        return tuple(_coerce(f"{key}[{i}]", get_args(kind)[0], v) for i, v in enumerate(value))
    if kind is bool:
        if not isinstance(value, bool):
            raise SrganError(f"params: {key} must be true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SrganError(f"params: {key} must be an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SrganError(f"params: {key} must be a number, got {value!r}")
        return float(value)
    if kind is str:
        if not isinstance(value, str) or not value:
            raise SrganError(f"params: {key} must be a non-empty string, got {value!r}")
        return value
    raise TypeError(f"unsupported params annotation {kind!r} for {key}")


def _build(cls: type, raw: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise SrganError(
            f"params: unknown key {prefix}{unknown[0]}; valid keys here: {', '.join(prefix + k for k in fields)}"
        )
    values = {}
    for name, value in raw.items():
        key = prefix + name
        coerced = _coerce(key, hints[name], value)
        check = fields[name].metadata
        if check and not check["rule"](coerced):
            raise SrganError(f"params: {key}={value!r} {check['text']}")
        values[name] = coerced
    return cls(**values)


def parse_params(raw: dict[str, Any]) -> Params:
    """Build `Params` from a parsed `params.yaml`, rejecting unknown keys and bad values."""
    if not isinstance(raw, dict):
        raise SrganError("params: the file must hold a mapping of sections")
    return _build(Params, raw)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate `params.yaml` (the path DVC tracks) before any work starts."""
    path = Path(path)
    if not path.is_file():
        raise SrganError(f"{path}: params file not found; run from the project root or pass its path")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise SrganError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    return parse_params(raw)


def flatten(params: Any, prefix: str = "") -> dict[str, Any]:
    """Params as flat `section.key` pairs, the form MLflow logs and `dvc exp run -S` takes."""
    flat: dict[str, Any] = {}
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if dataclasses.is_dataclass(value):
            flat.update(flatten(value, prefix + f.name + "."))
        else:
            flat[prefix + f.name] = list(value) if isinstance(value, tuple) else value
    return flat
