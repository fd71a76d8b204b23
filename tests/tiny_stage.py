"""A tiny training project (random shards, tiny models), a way to run its stage scripts, and a
tiny random-weight generator."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from srgan.models.networks import Generator

REPO = Path(__file__).resolve().parents[1]
TINY_PARAMS = """
preprocess: {hr_size: 32}
model: {blocks: 1, channels: 8, d_channels: 4}
runtime: {device: cpu, workers: 0, precision: fp32, threads: 1}
pretrain: {init: none, steps: STEPS, batch_size: 2, crop_size: 16, val_every: 10, checkpoint_every: 5}
train: {steps: 12, batch_size: 2, crop_size: 16, val_every: 6, checkpoint_every: 6}
"""


def write_tiny_project(root: Path, steps: int = 20) -> None:
    """Random 32→8 px shards (train: 24 patches, val: 4) and a params.yaml of tiny models, on one
    CPU thread (pinned as in project.TINY, so results do not depend on what runs beside the test
    or on a GPU the machine may have)."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("val", 4)):
        folder = root / "data" / "prepared" / split
        folder.mkdir(parents=True)
        hr = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        np.save(folder / "hr_00000.npy", hr)
        np.save(folder / "lr_00000.npy", np.ascontiguousarray(hr[:, ::4, ::4]))
    (root / "data" / "prepared" / "manifest.json").write_text("{}")
    (root / "params.yaml").write_text(TINY_PARAMS.replace("STEPS", str(steps)))


def stage(
    root: Path, name: str, *args: str, env: dict[str, str] | None = None, **popen: object
) -> subprocess.Popen[str]:
    """`python -m stages.<name>` in `root`, with the project's store (no inherited MLflow or DVC
    location) and `env` added to the environment."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("DVC_ROOT", None)
    return subprocess.Popen(
        [sys.executable, "-m", f"stages.{name}", *args],
        cwd=root,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def wait_for_first_checkpoint(root: Path) -> Path:
    """Poll until the running pretrain stage has written its first checkpoint; its folder."""
    checkpoints = root / ".cache" / "pretrain"
    deadline = time.time() + 120
    while not list(checkpoints.glob("*/last.pt")) and time.time() < deadline:
        time.sleep(0.05)
    return checkpoints


PRETRAIN = ("--data", "data/prepared", "--out", "models/srresnet.pt", "--curves", "reports/plots/pretrain.csv")
TRAIN = (
    "--data",
    "data/prepared",
    "--init",
    "models/srresnet.pt",
    "--out",
    "models/srgan.pt",
    "--discriminator",
    "models/discriminator.pt",
    "--curves",
    "reports/plots/train.csv",
)


def random_generator(bicubic_skip: bool, seed: int = 0, blocks: int = 2, upsampler: str = "pixelshuffle") -> Generator:
    """A tiny random-weight ×4 generator (8 channels) in eval mode, BN statistics not the identity."""
    torch.manual_seed(seed)
    gen = Generator(scale=4, blocks=blocks, channels=8, bicubic_skip=bicubic_skip, upsampler=upsampler)
    with torch.no_grad():
        for module in gen.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    return gen.eval()
