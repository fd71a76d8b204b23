"""On a machine with a usable GPU: pretrain and train (compiled) through the real stage code on
CUDA for a few steps (skipped elsewhere; the CPU suite pins runtime.device: cpu)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from tiny_stage import PRETRAIN, TRAIN, stage, write_tiny_project

from srgan.core.runtime import auto_precision, cuda_problem
from srgan.models.checkpoint import load_generator

pytestmark = pytest.mark.skipif(bool(cuda_problem()), reason="no usable CUDA device")


def test_pretrain_and_train_run_on_cuda_through_the_stage_code(tmp_path: Path) -> None:
    write_tiny_project(tmp_path, steps=30)
    params = tmp_path / "params.yaml"
    params.write_text(
        params.read_text()
        .replace("device: cpu", "device: cuda")
        .replace("precision: fp32", "precision: auto")
        .replace("train: {steps: 12, batch_size: 2", "train: {steps: 30, batch_size: 4")
    )
    precision = auto_precision(torch.device("cuda"))
    for name, args in (("pretrain", PRETRAIN), ("train", TRAIN)):
        if name == "train":  # the SRGAN stage with runtime.compile: its trained G and D compiled
            params.write_text(params.read_text().replace("runtime: {", "runtime: {compile: true, "))
        proc = stage(tmp_path, name, *args)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        estimate = next(line for line in err.splitlines() if line.startswith(f"{name}: 30 updates on"))
        assert f"on cuda ({torch.cuda.get_device_name()}, {precision}), expected to take about" in estimate
    assert load_generator(tmp_path / "models" / "srgan.pt").scale == 4
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("srgan").experiment_id])
    assert {run.data.params["runtime.resolved_device"] for run in runs} == {"cuda"}
    assert {run.data.params["runtime.resolved_precision"] for run in runs} == {precision}
    assert all(run.info.status == "FINISHED" for run in runs)
