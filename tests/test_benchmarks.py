"""The throughput benchmark on tiny models: it measures, counts FLOPs, and times the pipeline's path."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    # benchmarks/ holds scripts, not a package: import the file itself.
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return _load("train_throughput")


def tiny(bench: ModuleType, content: str | None) -> Any:
    return bench.Workload("default", crop_size=16, batch_size=2, content=content, blocks=1, channels=8, d_channels=4)


def test_measure_reports_positive_throughput_and_the_json_keys(bench: ModuleType) -> None:
    workloads = [tiny(bench, None), tiny(bench, "mse")]
    losses = bench.content_losses(workloads)
    results = [r for w in workloads for r in bench.measure(w, losses[w.content] if w.content else None, reps=1)]
    assert [(r.workload, r.variant) for r in results] == [
        ("srresnet", bench.REFERENCE),
        ("srresnet", bench.CANDIDATE),
        ("srresnet", bench.REFERENCE_SUBPIXEL),
        ("srgan_mse", bench.REFERENCE),
        ("srgan_mse", bench.CANDIDATE),
    ]
    for r in results:
        assert r.images_per_s > 0 and r.gflops > 0 and math.isfinite(r.ratio) and r.ratio > 0
        assert r.images_per_s == pytest.approx(r.steps_per_s * 2 * (1 if r.workload == "srresnet" else 2))
    assert results[0].ratio == 1.0  # the reference against itself

    line = json.dumps(bench.report_json(results, {"cpu": "test"}))
    report = json.loads(line)
    assert report["srresnet_speedup"] == pytest.approx(results[1].ratio, abs=1e-3)
    assert {"workload", "patch", "variant", "step_s", "images_per_s", "gflops", "ratio"} <= set(report["results"][0])
    assert "srresnet 4→16 b2" in bench.format_table(results, workloads)


def test_candidate_runs_the_pipelines_step_in_bf16_channels_last(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, bool, bool]] = []
    pipeline_step = bench.mse_step

    def spy(
        gen: torch.nn.Module, opt: torch.optim.Optimizer, lr_img: torch.Tensor, hr_img: torch.Tensor, rt: Any
    ) -> Any:
        weight = next(gen.parameters())  # the 9×9 head conv, (C, 3, 9, 9)
        channels_last = torch.channels_last
        seen.append(
            (
                rt.precision,
                weight.is_contiguous(memory_format=channels_last),
                lr_img.is_contiguous(memory_format=channels_last),
            )
        )
        return pipeline_step(gen, opt, lr_img, hr_img, rt)

    monkeypatch.setattr(bench, "mse_step", spy)
    bench.measure(tiny(bench, None), None, reps=2)
    assert seen == [("bf16", True, True)] * 3  # one warm-up, two timed steps; the reference never calls it


def test_grid_spectrum_tells_a_checkerboard_from_a_pooling_grid_and_from_noise() -> None:
    grid = _load("grid_spectrum")
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, (256, 256))
    checker = np.indices((256, 256)).sum(axis=0) % 2 * 2.0 - 1  # period 2: ±1
    pattern = rng.normal(0, 1, (16, 16))
    pattern -= np.tile(pattern.reshape(2, 8, 2, 8).mean(axis=(0, 2)), (2, 2))  # no 8-, 4- or 2-px part left
    pooling = np.tile(pattern, (16, 16))  # repeats every 16 px, as a grid printed through four 2×2 pools
    only_noise = grid.shares([noise])
    assert all(v < 0.01 for v in only_noise.values())
    with_checker = grid.shares([noise + checker])
    assert with_checker[2] > 0.45 and with_checker[16] < 0.01
    with_pooling = grid.shares([noise + pooling])
    assert with_pooling[16] > 0.3 and max(with_pooling[2], with_pooling[4], with_pooling[8]) < 0.01
