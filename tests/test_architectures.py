"""An architecture is a name: a class added to `ARCHITECTURES` (here, in the test) trains, is
saved and loaded by name, upscales in tiles and exports, with no other change; old files
without an `arch` entry still load as SRResNet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import nn

from srgan.cli import main
from srgan.core.config import parse_params
from srgan.core.errors import SrganError
from srgan.inference.export import export_onnx
from srgan.inference.tiling import context_radius, upscale_image
from srgan.models import checkpoint
from srgan.models.networks import ARCHITECTURES, Generator, check_architecture
from srgan.models.zoo import load_model
from srgan.tracking.runs import stage_run
from srgan.training.jobs import pretrain
from tests.test_upscale import CPU_FP32, FP32, smooth_image
from tests.tiny_stage import TINY_PARAMS, write_tiny_project


class NearestConv(nn.Module):
    """A throwaway generator: conv, PReLU, nearest-neighbour ×scale, conv (ESRGAN's kind of
    upsampler, no sub-pixel convolution, whatever `upsampler` says), over the bicubic skip when asked."""

    def __init__(self, scale: int, blocks: int, channels: int, bicubic_skip: bool, upsampler: str) -> None:
        super().__init__()
        self.scale, self.bicubic_skip, self.upsampler = scale, bicubic_skip, upsampler
        self.body = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1),
            nn.PReLU(channels),
            *(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(blocks)),
            nn.Upsample(scale_factor=scale, mode="nearest"),
            nn.Conv2d(channels, 3, 3, padding=1),
        )

    def forward(self, lr_img: torch.Tensor) -> torch.Tensor:
        sr_img = self.body(lr_img)
        if self.bicubic_skip:
            sr_img = sr_img + F.interpolate(lr_img, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return sr_img


def test_a_new_architecture_trains_loads_upscales_and_exports_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(ARCHITECTURES, "nearest_conv", NearestConv)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    write_tiny_project(tmp_path, steps=6)
    raw = yaml.safe_load(TINY_PARAMS.replace("STEPS", "6"))
    raw["model"]["arch"] = "nearest_conv"
    params = parse_params(raw)
    check_architecture(params.model.arch)  # what the params stage does
    job = pretrain(params, tmp_path / "data" / "prepared", tmp_path / "gen.pt", tmp_path / "curves.csv")
    with stage_run("pretrain", job.run_params, enabled=False) as tracker:
        job.run(tracker)

    stored = checkpoint.load(tmp_path / "gen.pt", checkpoint.GENERATOR_FORMAT)["config"]
    assert stored == {
        "arch": "nearest_conv",
        "scale": 4,
        "blocks": 1,
        "channels": 8,
        "bicubic_skip": True,
        "upsampler": "pixelshuffle",
    }
    gen = load_model(str(tmp_path / "gen.pt"))
    assert isinstance(gen, NearestConv)
    assert context_radius(gen) == 3  # the HR 3×3 conv's 1 px is 1 LR px after the ÷4, plus two LR 3×3 convs

    lr_img = smooth_image(40, 36)
    whole = (
        gen(torch.from_numpy(lr_img).permute(2, 0, 1)[None].float() / 255).clamp(0, 1).mul(255).round()[0]
    )  # (3, 160, 144)
    tiled = upscale_image(gen, lr_img, CPU_FP32, tile=32)  # tiles with context equal the whole image
    assert np.abs(tiled.astype(int) - whole.permute(1, 2, 0).detach().numpy()).max() <= 1

    Image.fromarray(lr_img).save(tmp_path / "in.png")
    main(
        [
            "upscale",
            str(tmp_path / "in.png"),
            "-o",
            str(tmp_path / "out.png"),
            "--model",
            str(tmp_path / "gen.pt"),
            *FP32,
        ]
    )
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), upscale_image(gen, lr_img, CPU_FP32))
    export_onnx(gen, tmp_path / "gen.onnx")
    assert (tmp_path / "gen.onnx").stat().st_size > 1000


def test_an_unknown_architecture_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(SrganError, match=r"params: model.arch='esrgan' is not an architecture: srresnet"):
        check_architecture(parse_params({"model": {"arch": "esrgan"}}).model.arch)
    path = tmp_path / "g.pt"
    config = checkpoint.generator_config(4, 1, 8, True, arch="esrgan")
    checkpoint.save(path, {"format": checkpoint.GENERATOR_FORMAT, "config": config, "state_dict": {}})
    with pytest.raises(SrganError, match=r"architecture 'esrgan' is not one of this srgan's \(srresnet\)"):
        checkpoint.load_generator(path)


def test_a_file_from_before_arch_loads_as_srresnet(tmp_path: Path) -> None:
    gen = Generator(scale=4, blocks=1, channels=8, bicubic_skip=True)
    old_config = {"scale": 4, "blocks": 1, "channels": 8, "bicubic_skip": True}  # no "arch": as files were
    checkpoint.save_generator(tmp_path / "old.pt", gen, old_config)
    loaded = checkpoint.load_generator(tmp_path / "old.pt", expect=checkpoint.generator_config(4, 1, 8, True))
    assert isinstance(loaded, Generator)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), gen.state_dict().values()))
