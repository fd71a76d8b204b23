"""Generator and discriminator shapes, and the step functions' effect on parameters."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from srgan.core.runtime import Runtime
from srgan.models.networks import Discriminator, Generator, icnr_
from srgan.training.losses import ContentLoss, GeneratorLoss, adversarial_loss
from srgan.training.steps import discriminator_step, freeze_batchnorm, generator_step, mse_step

CPU_FP32 = Runtime(torch.device("cpu"), "fp32")


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("bicubic_skip", [False, True])
def test_generator_output_shape_per_scale(scale: int, bicubic_skip: bool) -> None:
    gen = Generator(scale=scale, blocks=2, channels=8, bicubic_skip=bicubic_skip)
    sr_img = gen(torch.rand(2, 3, 10, 13))
    assert sr_img.shape == (2, 3, 10 * scale, 13 * scale)


def test_generator_upsampling_stages_follow_scale() -> None:
    shuffles = [m for m in Generator(scale=8, blocks=1, channels=8).modules() if isinstance(m, torch.nn.PixelShuffle)]
    assert len(shuffles) == 3  # log2(8) × PixelShuffle(2)
    nearest = Generator(scale=8, blocks=1, channels=8, upsampler="nearest")
    ups = [m for m in nearest.modules() if isinstance(m, torch.nn.Upsample)]
    assert len(ups) == 3 and not any(isinstance(m, torch.nn.PixelShuffle) for m in nearest.modules())
    convs = [m for m in nearest.upsample if isinstance(m, torch.nn.Conv2d)]
    assert all(conv.weight.shape == (8, 8, 3, 3) for conv in convs)  # C -> C after the ×2, not C -> 4C


@pytest.mark.parametrize("upsampler", ["pixelshuffle", "nearest"])
@pytest.mark.parametrize("scale", [2, 4, 8])
def test_subpixel_tail_computes_the_papers_layer_order(scale: int, upsampler: str) -> None:
    """The fast forward (last shuffle after the 9×9 tail; nearest stages as the sub-pixel convs they
    equal) gives the textbook outputs and gradients, borders included, for non-square inputs and
    PReLU slopes of both signs."""
    torch.manual_seed(0)
    gen = Generator(scale=scale, blocks=1, channels=8, upsampler=upsampler)
    for module in gen.modules():
        if isinstance(module, torch.nn.PReLU):
            module.weight.data.uniform_(-0.5, 0.5)
    lr_img = torch.rand(2, 3, 7, 11)
    results = []
    for subpixel in (True, False):
        gen.subpixel_tail = subpixel
        gen.zero_grad()
        sr_img = gen(lr_img)
        sr_img.square().sum().backward()
        results.append((sr_img.detach(), torch.cat([p.grad.flatten() for p in gen.parameters()])))
    (fast, fast_grad), (plain, plain_grad) = results
    assert fast.shape == (2, 3, 7 * scale, 11 * scale)
    assert (fast - plain).abs().max() < 1e-5
    # Summation order differs, so compare the whole gradient: the biases of convs that feed a
    # BatchNorm have a true gradient of 0 and carry only rounding noise in both.
    assert (fast_grad - plain_grad).norm() < 1e-5 * plain_grad.norm()


@pytest.mark.parametrize("side", [96, 256, 40])
def test_discriminator_gives_one_logit_per_image(side: int) -> None:
    disc = Discriminator(channels=8)
    assert disc(torch.rand(3, 3, side, side)).shape == (3,)


def test_discriminator_has_eight_convs_bn_on_all_but_first() -> None:
    disc = Discriminator(channels=8)
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in disc.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert [c.out_channels for c in convs] == [8, 8, 16, 16, 32, 32, 64, 64]
    assert [c.stride[0] for c in convs] == [1, 2] * 4
    assert len(norms) == 7


def test_spectral_discriminator_has_no_batchnorm_and_unit_spectral_norms() -> None:
    torch.manual_seed(0)
    disc = Discriminator(channels=8, norm="spectral")
    assert not [m for m in disc.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    weighted = [m for m in disc.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(weighted) == 10 and all(torch.nn.utils.parametrize.is_parametrized(m) for m in weighted)
    for _ in range(30):  # power iteration converges over forward passes in train mode
        disc(torch.rand(2, 3, 48, 48))
    linear = weighted[-2]  # the 1024-wide dense layer: its normalised weight has spectral norm ~1
    assert torch.linalg.matrix_norm(linear.weight.detach(), ord=2) == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match="norm must be one of"):
        Discriminator(channels=8, norm="layer")


def test_icnr_starts_the_subpixel_convs_checkerboard_free() -> None:
    """After ICNR each output pixel's four sub-pixels are equal; PyTorch's default init differs."""
    torch.manual_seed(0)
    x = torch.rand(1, 8, 6, 6)
    for init, equal in ((False, False), (True, True)):
        gen = Generator(4, blocks=1, channels=8)
        if init:
            icnr_(gen)
        shuffled = gen.upsample[1](gen.upsample[0](x))  # (1, 8, 12, 12)
        corners = [shuffled[..., i::2, j::2] for i in (0, 1) for j in (0, 1)]
        assert all(torch.equal(corners[0], c) for c in corners[1:]) == equal


def test_generator_loss_is_the_weighted_sum_and_frozen_bn_keeps_its_statistics() -> None:
    torch.manual_seed(0)
    sr_img, hr_img, logits = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16), torch.randn(2)
    total, parts = GeneratorLoss(ContentLoss("mse"), 0.5, 0.25)(sr_img, hr_img, logits)
    expected = F.mse_loss(sr_img, hr_img) + 0.5 * F.l1_loss(sr_img, hr_img) + 0.25 * adversarial_loss(logits)
    assert torch.allclose(total, expected) and set(parts) == {"g_content", "g_pixel", "g_adv"}

    gen, disc = Generator(4, blocks=1, channels=8).train(), Discriminator(channels=4)
    opt_g = torch.optim.Adam(gen.parameters(), 1e-3)
    loss = GeneratorLoss(ContentLoss("mse"), 0, 1e-3)
    stats = [m.running_mean for m in gen.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [s.clone() for s in stats]
    freeze_batchnorm(gen)
    generator_step(gen, disc, opt_g, loss, torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32), CPU_FP32)
    assert all(torch.equal(a, b) for a, b in zip(before, stats))
    gen.train()  # unfrozen, the same step moves them
    generator_step(gen, disc, opt_g, loss, torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32), CPU_FP32)
    assert not any(torch.equal(a, b) for a, b in zip(before, stats))


def _snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters()))


def test_gan_steps_change_only_their_own_network() -> None:
    torch.manual_seed(0)
    gen, disc = Generator(4, blocks=1, channels=8), Discriminator(channels=4)
    opt_g = torch.optim.Adam(gen.parameters(), 1e-3)
    opt_d = torch.optim.Adam(disc.parameters(), 1e-3)
    lr_img, hr_img = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 32, 32)

    g_before, d_before = _snapshot(gen), _snapshot(disc)
    d_out = discriminator_step(gen, disc, opt_d, lr_img, hr_img, CPU_FP32)
    assert _changed(d_before, disc)
    assert not _changed(g_before, gen)  # fakes are detached: G is untouched by the D step
    assert all(math.isfinite(float(v)) for v in d_out.values())
    assert 0 < float(d_out["d_x"]) < 1 and 0 < float(d_out["d_g_z"]) < 1

    g_before, d_before = _snapshot(gen), _snapshot(disc)
    g_out = generator_step(gen, disc, opt_g, GeneratorLoss(ContentLoss("mse"), 1e-2, 1e-3), lr_img, hr_img, CPU_FP32)
    assert _changed(g_before, gen)
    assert not _changed(d_before, disc)  # D is frozen during the G step
    assert all(p.requires_grad for p in disc.parameters())  # ...and unfrozen after it
    assert all(math.isfinite(float(v)) and float(v) > 0 for v in g_out.values())


def test_mse_step_lowers_the_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    gen = Generator(2, blocks=1, channels=8)
    opt = torch.optim.Adam(gen.parameters(), 1e-3)
    lr_img, hr_img = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)
    first = float(mse_step(gen, opt, lr_img, hr_img, CPU_FP32)["loss"])
    for _ in range(20):
        last = float(mse_step(gen, opt, lr_img, hr_img, CPU_FP32)["loss"])
    assert last < first
