"""The training loop, which knows nothing of models: it calls a step function, reports scalars at
log intervals, validates, checkpoints, and stops cleanly on Ctrl-C or when the tracking store has
been away too long."""

from __future__ import annotations

import math
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from srgan.core.errors import SrganError
from srgan.core.runtime import Runtime
from srgan.tracking.tracker import Tracker
from srgan.training import distributed
from srgan.training.steps import Scalars

# Curves get a point at least every 10 steps and at the last step.
LOG_EVERY = 10


@dataclass
class LoopState:
    """What a checkpoint restores besides weights: the next step, the curve rows so far, the last
    validation scores (`val_psnr`, `val_lpips`), the MLflow run they were logged to (continued
    on resume), and the curve points and images the store had not taken yet (`Tracker.unsent`)."""

    step: int = 0
    curves: list[dict[str, float]] = field(default_factory=list)
    validation: dict[str, float] = field(default_factory=dict)
    run_id: str = ""
    unsent: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Intervals:
    val: int
    checkpoint: int
    log: int = LOG_EVERY


@dataclass(frozen=True)
class Loop:
    """What one stage's loop runs: `step(i)` performs update i and returns its scalars (device
    tensors); `validate(i)` returns the validation scores after i updates; `save(state)` writes a
    checkpoint."""

    stage: str
    steps: int
    intervals: Intervals
    step: Callable[[int], Scalars]
    validate: Callable[[int], dict[str, float]]
    save: Callable[[LoopState], None]


class _StopFlag:
    """Turns Ctrl-C (SIGINT), and the SIGTERM torchrun sends its workers on Ctrl-C, into a request
    honoured at the next log step, never inside an optimizer update."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def run_loop(loop: Loop, state: LoopState, tracker: Tracker, rt: Runtime) -> None:
    """Run steps `state.step` .. `loop.steps`-1. Losses stay on the device between log steps (no
    per-step host sync); at log steps they are averaged (over processes too), checked for
    NaN/inf, logged, and added to `state.curves`, and a Ctrl-C, or a tracking store away for
    longer than its patience (`tracker.lost`), is honoured (all processes stop at the same step,
    after a checkpoint). A checkpoint is never written from non-finite weights."""
    if state.step == 0:
        state.validation = loop.validate(0)
        tracker.log_metrics(state.validation, step=0)
    every = loop.intervals
    sums: dict[str, torch.Tensor] = {}
    count = 0
    bar = tqdm(
        total=loop.steps,
        initial=state.step,
        desc=loop.stage,
        unit="step",
        dynamic_ncols=True,
        file=sys.stderr,
        disable=rt.rank != 0,
    )
    with _StopFlag() as stop:
        for step in range(state.step, loop.steps):
            rt.rebalance()  # another srgan process may have started or ended (runtime.threads auto)
            for key, value in loop.step(step).items():
                sums[key] = sums[key] + value if key in sums else value.clone()
            count += 1
            done = state.step = step + 1
            last = done == loop.steps
            stopping, lost = False, ""
            if done % every.log == 0 or done % every.checkpoint == 0 or last:
                lost = tracker.lost
                means, stopping = _reduce(sums, count, stop.requested or bool(lost), rt)
                _report(loop, state, means, validate=done % every.val == 0 or last, tracker=tracker)
                bar.set_postfix({k: f"{v:.4g}" for k, v in means.items()}, refresh=False)
                sums, count = {}, 0
            bar.update(1)
            if done % every.checkpoint == 0 or last or stopping:
                loop.save(state)
            if stopping and not last:
                bar.close()
                if lost:
                    raise SrganError(
                        f"{loop.stage}: {lost}; checkpoint saved at step {done}/{loop.steps} with what was not "
                        "sent; `dvc repro` resumes there"
                    )
                # Raised, not exited: the MLflow run ends KILLED on the way out (`stage_run`).
                raise KeyboardInterrupt(
                    f"{loop.stage}: interrupted at step {done}/{loop.steps}; checkpoint saved. "
                    "Run `dvc repro` (or the same command) again to resume from it."
                    if rt.rank == 0
                    else ""
                )
    bar.close()


def _reduce(sums: Scalars, count: int, stop_requested: bool, rt: Runtime) -> tuple[dict[str, float], bool]:
    """The mean of each scalar since the last log step, over processes too, and whether any process
    asked to stop: one reduction, the loop's one host sync."""
    keys = sorted(sums)
    packed = torch.cat(
        [
            torch.stack([sums[key].float() for key in keys]) / count,
            torch.tensor([float(stop_requested)], device=rt.device),
        ]
    )
    *values, stop_votes = distributed.mean_over_ranks(packed, rt).tolist()
    return dict(zip(keys, values)), stop_votes > 0


def _report(loop: Loop, state: LoopState, means: dict[str, float], *, validate: bool, tracker: Tracker) -> None:
    """Refuse non-finite losses, validate when due, log, and add a curve row."""
    bad = {k: v for k, v in means.items() if not math.isfinite(v)}
    if bad:
        raise SrganError(
            f"{loop.stage}: loss {', '.join(f'{k}={v}' for k, v in bad.items())} at step {state.step}; the last good "
            "checkpoint is kept. Lower the learning rate or check the data, then run again"
        )
    if validate:
        state.validation = loop.validate(state.step)
        means.update(state.validation)
    tracker.log_metrics(means, step=state.step)
    state.curves.append({"step": state.step, **means, **state.validation})
