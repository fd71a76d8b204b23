"""SRResNet generator and SRGAN discriminator (Ledig et al. 2017, Fig. 4), as plain `nn.Module`s,
and the table of generator architectures by name (`model.arch`).

Images enter and leave as (N, 3, H, W) float tensors, RGB, in [0, 1]. The generator's output is
not clamped (the MSE gradient needs the raw values); callers clamp when they make images.

A generator architecture is a class in `ARCHITECTURES`, built as `cls(scale=, blocks=, channels=,
bicubic_skip=, upsampler=)` (the `model` params), with `scale` and `bicubic_skip` attributes, stride-1
convolutions, and PixelShuffle or nearest `nn.Upsample` to enlarge (what tiling's context
radius reads). Training, checkpoints, evaluation, upscale, export and serving then take it by name.
"""

from __future__ import annotations

import math
from itertools import product

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from srgan.core.errors import SrganError


class ResidualBlock(nn.Module):
    """3×3 conv, BN, PReLU, 3×3 conv, BN, plus the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


# How the generator enlarges, ×2 a stage (`model.upsampler`): the paper's sub-pixel convolution, or
# nearest-neighbour ×2 then a 3×3 conv (ESRGAN's), whose four sub-pixels share one kernel, so it
# cannot print the 2/4-px grid a sub-pixel conv learns under the adversarial loss.
UPSAMPLERS = ("pixelshuffle", "nearest")
DEFAULT_UPSAMPLER = "pixelshuffle"  # what a generator file without an `upsampler` entry holds


def _upsample_stage(channels: int, upsampler: str) -> tuple[nn.Module, ...]:
    """One ×2 stage: (N, C, h, w) → (N, C, 2h, 2w)."""
    if upsampler == "pixelshuffle":
        return nn.Conv2d(channels, channels * 4, 3, padding=1), nn.PixelShuffle(2), nn.PReLU(channels)
    return nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels, channels, 3, padding=1), nn.PReLU(channels)


class Generator(nn.Module):
    """SRResNet: 9×9 conv + PReLU → B residual blocks → 3×3 conv + BN + global skip →
    log2(scale) × [3×3 conv to 4C, PixelShuffle(2), PReLU] → 9×9 conv to RGB.

    `bicubic_skip` is not in the paper: the network then predicts the residual over the bicubic
    upsampling of its input (as VDSR does), which trains much faster on a short CPU schedule.
    `upsampler="nearest"` is not in the paper either: each ×2 stage is [nearest ×2, 3×3 conv, PReLU].

    The forward pass computes the last ×2 stage and the 9×9 tail in the sub-pixel domain (see
    `_subpixel_tail`; a nearest stage as the sub-pixel conv it equals, `nearest_as_subpixel`): the
    same function with the same parameters, about twice as fast on CPU. `subpixel_tail = False`
    computes the layers in their order instead; the benchmarks' plain reference and the
    equivalence tests use it.
    """

    subpixel_tail: bool = True

    def __init__(
        self,
        scale: int = 4,
        blocks: int = 16,
        channels: int = 64,
        bicubic_skip: bool = False,
        upsampler: str = DEFAULT_UPSAMPLER,
    ) -> None:
        super().__init__()
        if scale not in (2, 4, 8):
            raise ValueError(f"scale must be 2, 4 or 8, got {scale}")
        if upsampler not in UPSAMPLERS:
            raise ValueError(f"upsampler must be one of {UPSAMPLERS}, got {upsampler!r}")
        self.scale = scale
        self.bicubic_skip = bicubic_skip
        self.upsampler = upsampler
        self.head = nn.Sequential(nn.Conv2d(3, channels, 9, padding=4), nn.PReLU(channels))
        self.blocks = nn.Sequential(*(ResidualBlock(channels) for _ in range(blocks)))
        self.body_tail = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels))
        self.upsample = nn.Sequential(
            *(layer for _ in range(int(math.log2(scale))) for layer in _upsample_stage(channels, upsampler))
        )
        self.tail = nn.Conv2d(channels, 3, 9, padding=4)
        # Where each tap of the sub-pixel kernel comes from (not saved: derived from the shapes).
        self.register_buffer("tail_index", _subpixel_index(3, channels, 9), persistent=False)

    def forward(self, lr_img: torch.Tensor) -> torch.Tensor:
        # lr_img: (N, 3, h, w) in [0, 1] -> returns (N, 3, h*scale, w*scale), ~[0, 1], unclamped
        features = self.head(lr_img)  # (N, C, h, w)
        features = features + self.body_tail(self.blocks(features))
        if self.subpixel_tail:
            sr_img = self._subpixel_tail(features)
        else:
            sr_img = self.tail(self.upsample(features))  # (N, 3, h*scale, w*scale)
        if self.bicubic_skip:
            sr_img = sr_img + F.interpolate(lr_img, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return sr_img

    def _subpixel_tail(self, features: torch.Tensor) -> torch.Tensor:
        """`tail(upsample(features))`, with the last PixelShuffle moved after the tail.

        A 9×9 conv to 3 channels on the 2×-shuffled image equals a 5×5 conv to 12 channels on
        the unshuffled 4C-channel map followed by a shuffle of its output; the PReLU before it
        commutes with the shuffle once its per-channel slopes are repeated 4×. oneDNN runs the
        3-output-channel conv poorly (90–120 GFLOP/s here against ~400 for the 64-channel ones),
        and the 64-channel full-resolution activations it reads are never built.
        """
        *stages, (weight, bias, slopes) = self._subpixel_stages()
        x = features
        for stage_weight, stage_bias, stage_slopes in stages:  # (N, C, h, w) -> (N, C, 2h, 2w)
            x = F.prelu(F.pixel_shuffle(F.conv2d(x, stage_weight, stage_bias, padding=1), 2), stage_slopes)
        x = F.conv2d(x, weight, bias, padding=1)  # (N, 4C, H/2, W/2)
        x = F.prelu(x, slopes.repeat_interleave(4).to(x.dtype))
        flat = torch.cat([self.tail.weight.flatten(), self.tail.weight.new_zeros(1)])
        kernel = flat[self.tail_index]  # (12, 4C, k', k')
        x = F.conv2d(x, kernel, self.tail.bias.repeat_interleave(4), padding=kernel.shape[-1] // 2)  # (N, 12, H/2, W/2)
        return F.pixel_shuffle(x, 2)  # (N, 3, H, W)

    def _subpixel_stages(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Each ×2 stage as the (4C, C, 3, 3) weight and (4C,) bias of a sub-pixel conv, and its
        PReLU's slopes: the sub-pixel conv's own, or the nearest stage's conv folded."""
        stages = []
        for first, second, prelu in zip(*[iter(self.upsample)] * 3):
            if self.upsampler == "pixelshuffle":
                stages.append((first.weight, first.bias, prelu.weight))
            else:
                stages.append((nearest_as_subpixel(second.weight), second.bias.repeat_interleave(4), prelu.weight))
        return stages


# For sub-pixel row i of a nearest-×2 image, which of the LR rows p-1, p, p+1 each tap of a 3×3
# kernel (rows 2p+i-1, 2p+i, 2p+i+1) reads: [i][LR offset][tap].
_NEAREST_TAPS = torch.tensor([[[1, 0, 0], [0, 1, 1], [0, 0, 0]], [[0, 0, 0], [1, 1, 0], [0, 0, 1]]])


def nearest_as_subpixel(weight: torch.Tensor) -> torch.Tensor:
    """The (4·O, C, 3, 3) kernel of a conv on the LR map whose output, PixelShuffle(2)-ed, equals
    the (O, C, 3, 3) `weight` applied, padding 1, to the nearest-neighbour ×2 of that map.

    HR pixel (2p + i, 2q + j) reads LR rows p-1 / p (i = 0) or p / p+1 (i = 1), and columns likewise,
    so each sub-pixel's kernel is a sum of taps of `weight` (output channel 4o + 2i + j is
    sub-pixel (i, j) of channel o after the shuffle). The zero padding agrees at both sizes.
    """
    taps = _NEAREST_TAPS.to(weight.dtype).to(weight.device)
    with torch.autocast(weight.device.type, enabled=False):  # summed in the weights' precision, cast once by the conv
        kernel = torch.einsum("iad,jbe,ocde->oijcab", taps, taps, weight)  # (O, 2, 2, C, 3, 3)
    return kernel.reshape(weight.shape[0] * 4, *weight.shape[1:])


def icnr_(generator: nn.Module) -> None:
    """ICNR initialisation (Aitken et al. 2017) of the generator's sub-pixel convolutions, in place.

    Each conv before a PixelShuffle(2) gets a kernel drawn for C outputs (PyTorch's default init)
    and repeated for the 4 sub-pixel positions each output feeds (channel c·4 + k of the conv is
    sub-pixel k of channel c after the shuffle), so at step 0 the four sub-pixels of an output pixel
    are equal: a nearest-neighbour upsampling of a convolution, free of the checkerboard a random
    sub-pixel kernel starts from. Training then moves the four copies apart.
    """
    layers = list(generator.modules())
    for layer, after in zip(layers, layers[1:]):
        if isinstance(layer, nn.Conv2d) and isinstance(after, nn.PixelShuffle):
            copies = after.upscale_factor**2
            narrow = nn.Conv2d(
                layer.in_channels, layer.out_channels // copies, layer.kernel_size, padding=layer.padding
            )
            with torch.no_grad():
                layer.weight.copy_(narrow.weight.repeat_interleave(copies, dim=0))
                layer.bias.copy_(narrow.bias.repeat_interleave(copies))


def _subpixel_index(out_channels: int, in_channels: int, size: int) -> torch.Tensor:
    """Indices into `cat(weight.flatten(), [0])` that turn a (O, C, k, k) kernel acting on a
    2×-pixel-shuffled input into the (4O, 4C, k', k') kernel acting on the unshuffled input
    (k' = 2·ceil(r/2) + 1, r = k // 2) whose output, pixel-shuffled, is the original output.

    Output pixel (2p + i, 2q + j) of channel o reads input pixel (2p + i + dy − r, …); that pixel
    is unshuffled channel 4c + 2s + t at (p + A, …) with i + dy − r = 2A + s. Taps with no source
    point at the appended zero.
    """
    r = size // 2
    half = (r + 1) // 2
    zero = out_channels * in_channels * size * size
    index = np.full((out_channels, 2, 2, in_channels, 2, 2, 2 * half + 1, 2 * half + 1), zero, dtype=np.int64)
    source = np.arange(zero).reshape(out_channels, in_channels, size, size)
    for i, j, dy, dx in product((0, 1), (0, 1), range(size), range(size)):
        a, s = divmod(i + dy - r, 2)
        b, t = divmod(j + dx - r, 2)
        index[:, i, j, :, s, t, a + half, b + half] = source[:, :, dy, dx]
    return torch.from_numpy(index.reshape(out_channels * 4, in_channels * 4, 2 * half + 1, 2 * half + 1))


# `model.arch` → generator class; a new architecture is one class and one entry here.
ARCHITECTURES: dict[str, type[nn.Module]] = {"srresnet": Generator}
DEFAULT_ARCH = "srresnet"  # what a checkpoint without an `arch` entry (written before it existed) holds


def check_architecture(name: str) -> None:
    """Refuse a `model.arch` that names no class here, listing those that exist."""
    if name not in ARCHITECTURES:
        raise SrganError(f"params: model.arch={name!r} is not an architecture: {', '.join(ARCHITECTURES)}")


def build_generator(config: dict) -> nn.Module:
    """The generator a checkpoint's config describes: `arch` (default srresnet) and its arguments."""
    arguments = dict(config)
    return ARCHITECTURES[arguments.pop("arch", DEFAULT_ARCH)](**arguments)


# The discriminator's normalisation: the paper's BatchNorm, or spectral norm on every weight layer
# (Miyato et al. 2018; Real-ESRGAN's discriminator), which bounds D's Lipschitz constant instead.
D_NORMS = ("batch", "spectral")


def _weighted(layer: nn.Module, norm: str) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(layer) if norm == "spectral" else layer


def _conv_block(in_channels: int, out_channels: int, stride: int, norm: str, first: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [_weighted(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1), norm)]
    if norm == "batch" and not first:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.LeakyReLU(0.2))
    return layers


class Discriminator(nn.Module):
    """8 conv layers of 3×3 in pairs of width C, 2C, 4C, 8C (stride 1 then 2), LeakyReLU 0.2,
    BN on all but the first → adaptive average pool to 6×6 → dense 1024 → LeakyReLU → dense 1.

    The pool keeps the dense layer the paper's size for any crop (96 px gives 6×6 already).
    `norm="spectral"` replaces the BNs by spectral norm on every conv and dense layer.
    Returns logits (N,); the paper's sigmoid lives in the BCE-with-logits loss.
    """

    def __init__(self, channels: int = 64, norm: str = "batch") -> None:
        super().__init__()
        if norm not in D_NORMS:
            raise ValueError(f"norm must be one of {D_NORMS}, got {norm!r}")
        widths = [channels, channels * 2, channels * 4, channels * 8]
        layers: list[nn.Module] = []
        in_channels = 3
        for i, width in enumerate(widths):
            layers += _conv_block(in_channels, width, stride=1, norm=norm, first=i == 0)
            layers += _conv_block(width, width, stride=2, norm=norm, first=False)
            in_channels = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(6))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            _weighted(nn.Linear(widths[-1] * 36, 1024), norm),
            nn.LeakyReLU(0.2),
            _weighted(nn.Linear(1024, 1), norm),
        )

    def forward(self, hr_img: torch.Tensor) -> torch.Tensor:
        # hr_img: (N, 3, H, W) in [0, 1] -> logits (N,)
        return self.classifier(self.features(hr_img)).squeeze(1)
