"""What one training update computes, and validation.

`mse_step` trains SRResNet; `discriminator_step` and `generator_step` are the reference slides'
SRGAN algorithm (k D steps on fresh batches, then one G step; D frozen during the G step, fakes
detached for the D step). Images: (N, 3, h, w) LR and (N, 3, H, W) HR, float RGB in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from srgan.core.metrics import psnr
from srgan.core.runtime import Runtime
from srgan.data.batches import to_float
from srgan.models.lpips import MIN_SIZE as LPIPS_MIN_SIZE
from srgan.models.lpips import lpips_model
from srgan.training.losses import GeneratorLoss, discriminator_loss

Scalars = dict[str, torch.Tensor]  # a step's losses and statistics by name, 0-dim tensors on the device


def mse_step(
    gen: nn.Module, opt: torch.optim.Optimizer, lr_img: torch.Tensor, hr_img: torch.Tensor, rt: Runtime
) -> Scalars:
    """One SRResNet update on pixel MSE."""
    with rt.autocast():
        sr_img = gen(lr_img)  # (N, 3, H, W), ~[0, 1]
    loss = F.mse_loss(sr_img.float(), hr_img)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {"loss": loss.detach()}


def discriminator_step(
    gen: nn.Module,
    disc: nn.Module,
    opt_d: torch.optim.Optimizer,
    lr_img: torch.Tensor,
    hr_img: torch.Tensor,
    rt: Runtime,
) -> Scalars:
    """One D update: real HR against detached G(LR). Returns both BCE terms and mean D outputs."""
    with torch.no_grad(), rt.autocast():
        fake_img = gen(lr_img)
    with rt.autocast():
        real_logits = disc(hr_img).float()
        fake_logits = disc(fake_img.detach()).float()
    d_real, d_fake = discriminator_loss(real_logits, fake_logits)
    opt_d.zero_grad(set_to_none=True)
    (d_real + d_fake).backward()
    opt_d.step()
    return {
        "d_real": d_real.detach(),
        "d_fake": d_fake.detach(),
        "d_x": torch.sigmoid(real_logits.detach()).mean(),
        "d_g_z": torch.sigmoid(fake_logits.detach()).mean(),
    }


def generator_step(
    gen: nn.Module,
    disc: nn.Module,
    opt_g: torch.optim.Optimizer,
    loss: GeneratorLoss,
    lr_img: torch.Tensor,
    hr_img: torch.Tensor,
    rt: Runtime,
) -> Scalars:
    """One G update on `loss` (content, pixel and adversarial terms), with D frozen."""
    disc.requires_grad_(False)
    try:
        with rt.autocast():
            sr_img = gen(lr_img)
            fake_logits = disc(sr_img).float()
            total, scalars = loss(sr_img, hr_img, fake_logits)
        opt_g.zero_grad(set_to_none=True)
        total.backward()
        opt_g.step()
    finally:
        disc.requires_grad_(True)
    return scalars


def freeze_batchnorm(model: nn.Module) -> None:
    """Put every BatchNorm of `model` in eval mode: normalise with the running statistics the MSE
    phase learned and stop updating them (ESRGAN §3.1: batch statistics under GAN training bring
    artefacts). Called before each update, since validation switches the model back to train mode."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def adam(model: nn.Module, learning_rate: float) -> torch.optim.Optimizer:
    """The paper's Adam (β = 0.9, 0.999) with PyTorch's fused kernel, which CPU and CUDA both have."""
    return torch.optim.Adam(model.parameters(), lr=learning_rate, betas=(0.9, 0.999), fused=True)


def set_learning_rate(
    optimizers: list[torch.optim.Optimizer], base: float, decay_at: float, steps: int, step: int
) -> None:
    """The paper's schedule: `base`, then base/10 from `decay_at` of the way on."""
    value = base if step < decay_at * steps else base * 0.1
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] = value


# What validation reports, in curves and MLflow: PSNR up, LPIPS down as the GAN phase starts paying.
VALIDATION = ("val_psnr", "val_lpips")


@torch.no_grad()
def validate(
    gen: nn.Module, lr_val: torch.Tensor, hr_val: torch.Tensor, scale: int, rt: Runtime
) -> tuple[dict[str, float], np.ndarray]:
    """Mean PSNR (the `rgb` convention: all channels, 0–255, border crop = scale) and mean LPIPS
    (AlexNet, the same crop; lower is better; NaN for patches under 32 px after the crop) over the
    validation patches, and an image grid.

    lr_val / hr_val: uint8 (N, 3, h, w) / (N, 3, H, W). The grid is uint8 (rows·H, 3·W, 3):
    per row LR (nearest-upscaled) | SR | HR for the first four patches.
    """
    was_training = gen.training
    gen.eval()
    sr_batches = []
    for start in range(0, len(lr_val), 8):
        with rt.autocast():
            sr_img = gen(to_float(lr_val[start : start + 8], rt.device))
        sr_batches.append(sr_img.float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu())  # (n, 3, H, W)
    gen.train(was_training)
    sr_all = torch.cat(sr_batches)
    mean_psnr = float(
        np.mean([psnr(_hwc(sr), _hwc(hr), crop_border=scale, y_channel=False) for sr, hr in zip(sr_all, hr_val)])
    )
    inner = (slice(None), slice(None), slice(scale, -scale), slice(scale, -scale))
    # (N, 3, H', W') in [0, 1], on the training device: LPIPS runs there
    sr_inner, hr_inner = (img[inner].to(rt.device).float() / 255 for img in (sr_all, hr_val))
    measurable = min(sr_inner.shape[2:]) >= LPIPS_MIN_SIZE  # tiny test patches are not
    mean_lpips = float(lpips_model(device=str(rt.device))(sr_inner, hr_inner).mean()) if measurable else float("nan")
    rows = []
    for i in range(min(4, len(lr_val))):
        lr_up = F.interpolate(lr_val[i : i + 1].float(), scale_factor=scale, mode="nearest")[0].to(torch.uint8)
        rows.append(torch.cat([lr_up, sr_all[i], hr_val[i]], dim=2))  # (3, H, 3W)
    grid = torch.cat(rows, dim=1).permute(1, 2, 0).numpy()  # (rows·H, 3W, 3) uint8 RGB
    return dict(zip(VALIDATION, (mean_psnr, mean_lpips))), grid


def _hwc(img: torch.Tensor) -> np.ndarray:
    """(3, H, W) CPU tensor -> (H, W, 3) array, as `srgan.core.metrics` takes images."""
    return img.permute(1, 2, 0).numpy()
