"""VGG content loss: the right layer, the paper's rescaling, and the missing-weights error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import vgg19

from srgan.errors import SrganError
from srgan.losses import VGG_RESCALE, ContentLoss, adversarial_loss, discriminator_loss, vgg19_cache_file


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """Random VGG19 weights written to a local file: no network."""
    torch.manual_seed(0)
    network = vgg19().eval()
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save(network.state_dict(), path)
    return path, network


@pytest.mark.parametrize(("kind", "end"), [("vgg22", 9), ("vgg54", 36)])
def test_vgg_loss_taps_the_expected_layer(vgg_file: tuple[Path, torch.nn.Module], kind: str, end: int) -> None:
    path, network = vgg_file
    loss = ContentLoss(kind, str(path))
    sr_img, hr_img = torch.rand(1, 3, 48, 48), torch.rand(1, 3, 48, 48)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        direct_sr = network.features[:end]((sr_img - mean) / std)
        direct_hr = network.features[:end]((hr_img - mean) / std)
        expected = F.mse_loss(direct_sr * VGG_RESCALE, direct_hr * VGG_RESCALE)
        got = loss(sr_img, hr_img)
    assert isinstance(network.features[end - 1], torch.nn.ReLU)  # φ is taken after the ReLU
    assert torch.allclose(got, expected, rtol=1e-5)
    assert loss.vgg is not None and len(loss.vgg.features) == end


def test_missing_vgg_file_names_file_url_and_offline_option(tmp_path: Path) -> None:
    with pytest.raises(SrganError) as err:
        ContentLoss("vgg54", str(tmp_path / "nope.pth"))
    text = str(err.value)
    assert "nope.pth" in text and "vgg19-dcbb9e9d.pth" in text and "train.content_loss=mse" in text


def test_no_cache_and_no_network_gives_one_line_error(tmp_path: Path) -> None:
    # An empty TORCH_HOME and a proxy on a closed local port: the download fails at once, offline.
    code = "from srgan.losses import ContentLoss; from srgan.errors import exit_on_error; exit_on_error(lambda: ContentLoss('vgg54'))()"
    env = {"TORCH_HOME": str(tmp_path), "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "PATH": "/usr/bin:/bin", "NO_PROXY": ""}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    expected_file = tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    assert str(expected_file) in lines[0]
    assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in lines[0]
    assert "train.content_loss=mse" in lines[0]
    assert vgg19_cache_file().name == "vgg19-dcbb9e9d.pth"


def test_adversarial_losses_match_their_closed_forms() -> None:
    logits = torch.tensor([0.0, 2.0])
    # -log sigmoid(0) = log 2; -log sigmoid(2) = log(1 + e^-2)
    expected = (torch.log(torch.tensor(2.0)) + torch.log1p(torch.exp(torch.tensor(-2.0)))) / 2
    assert torch.allclose(adversarial_loss(logits), expected)
    real, fake = discriminator_loss(torch.tensor([0.0]), torch.tensor([0.0]))
    assert torch.allclose(real, torch.log(torch.tensor(2.0))) and torch.allclose(fake, torch.log(torch.tensor(2.0)))
