"""The training loop's cadence and its first line: validations and checkpoints spread over a long
schedule (at most about 200 of each, `make paper`'s 1e6 updates included), the default run's
cadence unchanged, and the expected wall time printed before the progress bar."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from project import image_steps

from srgan.core.runtime import Runtime
from srgan.tracking.runs import stage_run
from srgan.training.loop import MAX_POINTS, Intervals, Loop, LoopState, expected_time, run_loop
from srgan.training.steps import Scalars

CPU = Runtime(torch.device("cpu"), "fp32")


def test_long_schedules_spread_validations_and_checkpoints_and_short_ones_keep_theirs() -> None:
    # make paper: 1e6 pretrain updates (params every 100) and 2e5 SRGAN updates (every 20).
    assert Intervals.spread(100, 100, 1_000_000) == Intervals(5_000, 5_000)
    assert Intervals.spread(20, 20, 200_000) == Intervals(1_000, 1_000)
    # make repro's 300 SRGAN updates every 20, and the tests' tiny runs: as configured.
    assert Intervals.spread(20, 20, 300) == Intervals(20, 20)
    assert Intervals.spread(5, 10, 12) == Intervals(5, 10)
    # Widened only as far as needed: 10,001 updates every 20 → every 51 (196 points, not 500).
    assert Intervals.spread(20, 20, 10_001) == Intervals(51, 51)


def test_a_ten_thousand_update_run_writes_at_most_200_checkpoints_and_image_grids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The loop with `make paper`'s SRGAN intervals (every 20) over 10,000 real Adam updates of a
    small model: the checkpoints it asks for and the validation grids MLflow holds are each at most
    MAX_POINTS (500 each at every 20), evenly spaced and ending at the last step; the stage's
    first line is the expected wall time, from the warm-up's measured rate (here the whole run may
    take less than the warm-up's 5 s, and the line then comes at the end)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    steps = 10_000
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(16))
    opt = torch.optim.Adam([weight], lr=1e-2)
    target = torch.linspace(-1, 1, 16)
    saved: list[int] = []

    def step(i: int) -> Scalars:
        loss = (weight - target).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": loss.detach()}

    with stage_run("train", {}) as tracker:

        def validate(i: int) -> dict[str, float]:
            grid = np.full((8, 24, 3), min(i // 40, 255), dtype=np.uint8)  # uint8 (H, W, 3) RGB
            tracker.log_image(grid, key="validation", step=i)
            return {"val_psnr": float(i)}

        loop = Loop(
            stage="train",
            steps=steps,
            intervals=Intervals.spread(20, 20, steps),
            step=step,
            validate=validate,
            save=lambda state: saved.append(state.step),
        )
        capsys.readouterr()  # what opening the store printed
        run_loop(loop, LoopState(), tracker, CPU)
        run_id = tracker.run_id

    every = -(-steps // MAX_POINTS)  # 50
    assert saved == list(range(every, steps + 1, every)) and len(saved) == MAX_POINTS
    grids = image_steps(MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"), run_id, "validation")
    assert grids == [0, *range(every, steps + 1, every)]  # step 0, then every 50 to the last
    assert (weight - target).abs().max() < 1e-3  # the updates were real: the weight reached its target

    first = capsys.readouterr().err.strip().splitlines()[0]
    match = re.fullmatch(
        r"train: 10000 updates on cpu \(.+, fp32\), expected to take about (\d+) (s|min \d+ s) "
        r"\(([\d.e+]+) updates/s over updates 2-(\d+), 200 validations of [\d.e-]+ s\)",
        first,
    )
    assert match, first
    # Timed from the end of update 1 for WARMUP_S (5 s), or to the last update if that comes first.
    assert 2 < int(match.group(4)) <= steps and float(match.group(3)) > 0


def test_a_long_cpu_run_that_auto_settled_for_is_pointed_out_with_its_estimate() -> None:
    """`make paper`'s 1e6 SRResNet updates at this CPU's 0.21 updates/s (docs/speed.md), where
    `runtime.device: auto` found no GPU: 55 days, said in a warning line with torch's reason. The
    same run asked for on the CPU, or a short one, gets the estimate alone."""
    reason = "Found no NVIDIA driver on your system."
    auto = Runtime(torch.device("cpu"), "bf16", cpu_because=reason)
    first, warning = expected_time("pretrain", 1_000_000, 0.21, (2, 3), 200, 4.0, auto).splitlines()
    assert first.startswith("pretrain: 1000000 updates on cpu (")
    assert first.endswith(
        ", bf16), expected to take about 55 d 2 h (0.21 updates/s over updates 2-3, 200 validations of 4 s)"
    )
    assert warning == (
        f"warning: pretrain runs on the CPU because runtime.device: auto found no usable GPU ({reason}); "
        "about 55 d 2 h: set runtime.device=cuda to require a GPU, or fewer pretrain.steps"
    )
    asked = Runtime(torch.device("cpu"), "bf16")
    assert len(expected_time("pretrain", 1_000_000, 0.21, (2, 3), 200, 4.0, asked).splitlines()) == 1
    short = expected_time("train", 300, 1.0, (2, 6), 15, float("nan"), auto)
    assert short.endswith("about 5 min 0 s (1 updates/s over updates 2-6; validation not timed on a resumed run)")
