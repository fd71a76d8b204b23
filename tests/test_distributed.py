"""Pretrain under torchrun with 2 CPU processes (gloo): the same updates as one process that
accumulates the gradients of the two half-batches, resumable after a SIGKILL, logged once."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mlflow.tracking import MlflowClient
from project import free_port
from tiny_stage import PRETRAIN, REPO, TRAIN, stage, wait_for_first_checkpoint, write_tiny_project

from srgan.core.config import load_params
from srgan.core.runtime import seed_everything
from srgan.data.batches import RandomCrops, Shards, to_float
from srgan.models.checkpoint import generator_config, load_generator, params_config, save_generator
from srgan.models.networks import Generator, build_generator, icnr_
from srgan.training.steps import adam

pytestmark = pytest.mark.e2e  # torchrun and its worker processes

STEPS = 60
# fp32 all-reduce averaging and one-process accumulation add the same numbers in another order;
# after 60 Adam updates of lr 1e-3 the weights agree to this (measured: at most 1.2e-7).
TOLERANCE = 1e-5


def biases_before_batchnorm(gen: torch.nn.Module) -> set[str]:
    """Biases of convolutions that feed a BatchNorm. BN subtracts them again, so their true
    gradient is 0 and they get only rounding noise, which Adam scales up to lr-sized steps
    (measured: 1.5e-3 to 4.5e-3 apart after 60 steps). They do not change the function."""
    names = set()
    for prefix, module in gen.named_modules():
        if isinstance(module, torch.nn.Sequential):
            for i, (layer, following) in enumerate(zip(module, list(module)[1:])):
                if isinstance(layer, torch.nn.Conv2d) and isinstance(following, torch.nn.BatchNorm2d):
                    names.add(f"{prefix}.{i}.bias")
    return names


def one_process_accumulating_half_batches(root: Path) -> tuple[dict[str, torch.Tensor], Generator]:
    """The reference: pretrain's initialisation and batches, each global batch split into the two
    halves the ranks get, gradients of mean-MSE/2 summed over the halves, then one Adam step.
    BatchNorm normalises each half on its own, as it does per rank (no SyncBatchNorm on CPU).
    Returns the initial parameters and the trained generator."""
    params = load_params(root / "params.yaml")
    p = params.pretrain
    seed_everything(params.seed)
    config = generator_config(params.scale, params.model.blocks, params.model.channels, params.model.bicubic_skip)
    gen = build_generator(config)
    if p.icnr:
        icnr_(gen)
    gen = gen.to(memory_format=torch.channels_last).train()
    initial = {name: value.detach().clone() for name, value in gen.named_parameters()}
    opt = adam(gen, p.learning_rate)
    shards = Shards(root / "data" / "prepared" / "train")
    halves = [
        RandomCrops(
            shards, batch_size=p.batch_size, crop_size=p.crop_size, scale=params.scale, seed=params.seed, part=(rank, 2)
        )
        for rank in range(2)
    ]
    cpu = torch.device("cpu")
    for step in range(p.steps):
        opt.zero_grad(set_to_none=True)
        for half in halves:
            lr_img, hr_img = half[step]
            (F.mse_loss(gen(to_float(lr_img, cpu)), to_float(hr_img, cpu)) / 2).backward()
        opt.step()
    return initial, gen


def test_two_process_pretrain_resumes_and_matches_one_process_gradient_accumulation(tmp_path: Path) -> None:
    write_tiny_project(tmp_path, steps=STEPS)
    params = tmp_path / "params.yaml"
    params.write_text(
        params.read_text()
        .replace("runtime: {", "runtime: {nproc: 2, ")
        .replace("pretrain: {", "pretrain: {learning_rate: 1.0e-3, decay_at: 1.0, ")
        .replace("batch_size: 2, crop_size: 16, val_every: 10", "batch_size: 4, crop_size: 16, val_every: 30")
    )
    first = stage(tmp_path, "pretrain", *PRETRAIN, start_new_session=True)
    checkpoints = wait_for_first_checkpoint(tmp_path)
    os.killpg(first.pid, signal.SIGKILL)  # torchrun and both workers, as a crash would
    first.wait()
    assert not (tmp_path / "models" / "srresnet.pt").exists()

    second = stage(tmp_path, "pretrain", *PRETRAIN)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert "resuming from step" in err
    assert len(list(checkpoints.glob("*/last.pt"))) == 1

    trained = load_generator(tmp_path / "models" / "srresnet.pt")
    initial, reference = one_process_accumulating_half_batches(tmp_path)
    trained_params, reference_params = dict(trained.named_parameters()), dict(reference.named_parameters())
    assert trained_params.keys() == reference_params.keys()
    compared = trained_params.keys() - biases_before_batchnorm(reference)
    assert len(compared) >= len(trained_params) - 3  # one block: its two convs and the body's last
    worst = max((trained_params[k] - reference_params[k]).abs().max().item() for k in compared)
    assert worst < TOLERANCE
    moved = max((reference_params[k] - initial[k]).abs().max().item() for k in compared)
    assert moved > 100 * TOLERANCE  # training changed the weights far more than the tolerance

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("srgan").experiment_id])
    # One run, from rank 0 only: the resumed launch continues the run its checkpoint names.
    (finished,) = runs
    assert finished.info.status == "FINISHED"
    assert finished.data.params["runtime.world_size"] == "2"
    assert client.get_metric_history(finished.info.run_id, "loss")[-1].step == STEPS


def test_the_readmes_rendezvous_command_trains_srgan_on_two_ranks_and_retrains_a_finished_run(tmp_path: Path) -> None:
    """docs/scaling.md: torchrun with rendezvous flags (here one node on 127.0.0.1) runs the
    SRGAN stage directly; it sees torchrun's environment, does not re-launch, and trains with 2
    ranks (gloo): one MLflow run, the loss curve to the last step, the two ranks' weights
    identical at the end. Run again (what `dvc repro -f` does), rank 0 alone finds the finished
    mark and removes it, and both ranks train again from step 0 (each rank used to look for the
    mark while another deleted it)."""
    write_tiny_project(tmp_path)  # runtime.nproc stays 1: torchrun sets the world
    yaml_file = tmp_path / "params.yaml"
    # Two images a rank: the discriminator's last BatchNorm sees 1×1 maps, and needs more than one.
    yaml_file.write_text(
        yaml_file.read_text().replace("train: {steps: 12, batch_size: 2", "train: {steps: 12, batch_size: 4")
    )
    params = load_params(yaml_file)
    config = params_config(params)
    torch.manual_seed(0)
    save_generator(tmp_path / "models" / "srresnet.pt", build_generator(config), config)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc-per-node=2",
        "--rdzv-id=srgan1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{free_port()}",
        "-m",
        "stages.train",
        *TRAIN,
    ]
    env = {key: value for key, value in os.environ.items() if key not in ("MLFLOW_TRACKING_URI", "DVC_ROOT")}
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    for execution in (1, 2):
        result = subprocess.run(
            command, cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stderr.count("holds a finished run; training again from step 0") == execution - 1
        assert f"train: weights identical on all 2 processes after step {params.train.steps}" in result.stderr
        runs = client.search_runs([client.get_experiment_by_name("srgan").experiment_id])
        assert len(runs) == execution  # one run per execution, from rank 0 only
        run = runs[0]
        assert run.info.status == "FINISHED" and run.data.params["runtime.world_size"] == "2"
        losses = client.get_metric_history(run.info.run_id, "g_content")
        assert [point.step for point in losses] == [6, 10, 12]  # at each checkpoint and log step
        assert all(math.isfinite(point.value) and point.value > 0 for point in losses)
    assert load_generator(tmp_path / "models" / "srgan.pt").scale == 4
