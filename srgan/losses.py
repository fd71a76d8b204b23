"""Losses: pixel MSE, VGG19 content loss (φ2,2 / φ5,4), and the non-saturating adversarial loss.

Losses only compute; where the VGG weights come from is decided here once, before training,
so a missing file fails the stage before its first step.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import VGG19_Weights, vgg19

from srgan.errors import SrganError

# torchvision VGG19 `features` prefixes that end just after the ReLU of the named conv.
VGG_LAYERS = {"vgg22": 9, "vgg54": 36}
# The paper rescales VGG feature maps by 1/12.75 so the content loss is of the order of the MSE loss.
VGG_RESCALE = 1 / 12.75
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg19_cache_file() -> Path:
    """Where torchvision caches the ImageNet VGG19 weights (`$TORCH_HOME/hub/checkpoints/...`)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(VGG19_Weights.IMAGENET1K_V1.url)


def load_vgg19_state_dict(weights_path: str | None) -> dict[str, torch.Tensor]:
    """VGG19 weights from `weights_path`, else torchvision's cache, else torchvision's download.

    Raises one-line `SrganError` naming the expected file, its URL and the offline alternative.
    """
    url = VGG19_Weights.IMAGENET1K_V1.url
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise SrganError(
                f"train.vgg_weights: {path} not found; download {url} to that path, "
                "or set train.content_loss=mse to train without VGG"
            )
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file gets the same one-line answer
            raise SrganError(f"train.vgg_weights: {path} is not a VGG19 state dict ({type(err).__name__})") from None
    try:
        return VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=True, weights_only=True)
    except Exception as err:  # noqa: BLE001 - no network, proxy refusal, partial file...
        raise SrganError(
            f"VGG19 weights not found at {vgg19_cache_file()} and could not be downloaded from {url} "
            f"({type(err).__name__}); put the file there (or set train.vgg_weights to its path), "
            "or set train.content_loss=mse to train without VGG"
        ) from None


class VGGFeatures(nn.Module):
    """Frozen VGG19 feature extractor up to φ2,2 (`vgg22`) or φ5,4 (`vgg54`), after the ReLU."""

    def __init__(self, layer: str, state_dict: dict[str, torch.Tensor]) -> None:
        super().__init__()
        network = vgg19()
        try:
            network.load_state_dict(state_dict)
        except RuntimeError as err:
            raise SrganError(f"VGG19 weights do not fit torchvision's vgg19: {str(err).splitlines()[0]}") from None
        self.features = network.features[: VGG_LAYERS[layer]].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> VGGFeatures:
        # Keep VGG in eval mode whatever the training loop does to its parent.
        return super().train(False)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        # img: (N, 3, H, W) RGB in [0, 1] -> ImageNet-normalised -> (N, C, H', W') features
        return self.features((img - self.mean) / self.std)


class ContentLoss(nn.Module):
    """`mse` on pixels, or MSE between VGG feature maps scaled by 1/12.75 (the paper's φ/12.75)."""

    def __init__(self, kind: str, vgg_weights: str | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.vgg = VGGFeatures(kind, load_vgg19_state_dict(vgg_weights)) if kind in VGG_LAYERS else None

    def forward(self, sr_img: torch.Tensor, hr_img: torch.Tensor) -> torch.Tensor:
        if self.vgg is None:
            return F.mse_loss(sr_img.float(), hr_img.float())
        # Features may come out of bf16 autocast; the loss itself is computed in fp32.
        sr_features = self.vgg(sr_img).float() * VGG_RESCALE
        hr_features = self.vgg(hr_img).detach().float() * VGG_RESCALE
        return F.mse_loss(sr_features, hr_features)


def adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator loss −log D(G(x)), non-saturating, from logits (BCE-with-logits against 1)."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """−log D(x) and −log(1 − D(G(z))), returned separately so both curves can be logged."""
    real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return real, fake
