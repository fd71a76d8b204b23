"""The training loop, which knows nothing of models: it calls a step function, reports scalars at
log intervals, validates, checkpoints, and stops cleanly on Ctrl-C or when the tracking store has
been away too long."""

from __future__ import annotations

import math
import signal
import sys
import time
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
# At most about this many validations and checkpoints a stage: a schedule longer than this many
# `val_every` / `checkpoint_every` intervals spreads them evenly instead (`make paper`'s 1e6
# updates: every 5,000, not every 100, which would be 10,000 image grids and ~300 MB checkpoints).
MAX_POINTS = 200
# The updates timed for the expected wall time: from the end of the first one (cudnn's
# autotuning, torch.compile, warm caches) until this many seconds have passed, so the first log
# steps' and validation's costs are in it in their share.
WARMUP_S = 5.0
# A CPU run that `runtime.device: auto` settled for, expected to take longer than this, is
# pointed out with its estimate.
LONG_CPU_RUN_S = 3 * 3600


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
    """Steps between validations, checkpoints and curve points (every one of them also at the
    last step)."""

    val: int
    checkpoint: int
    log: int = LOG_EVERY

    @classmethod
    def spread(cls, val_every: int, checkpoint_every: int, steps: int) -> Intervals:
        """`val_every` and `checkpoint_every`, widened to steps / `MAX_POINTS` (rounded up) for a
        long schedule, so that a run writes at most about `MAX_POINTS` of each."""
        floor = -(-steps // MAX_POINTS)
        return cls(max(val_every, floor), max(checkpoint_every, floor))


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
    every = loop.intervals
    validation_s = float("nan")
    if state.step == 0:
        began = time.perf_counter()
        state.validation = loop.validate(0)
        validation_s = time.perf_counter() - began
        tracker.log_metrics(state.validation, step=0)
    watch = _Stopwatch(loop, every, state.step, rt, validation_s)
    sums: dict[str, torch.Tensor] = {}
    count = 0
    bar: tqdm | None = None  # shown once the estimate is out, under it
    with _StopFlag() as stop:
        for step in range(state.step, loop.steps):
            rt.rebalance()  # another srgan process may have started or ended (runtime.threads auto)
            for key, value in loop.step(step).items():
                sums[key] = sums[key] + value if key in sums else value.clone()
            count += 1
            done = state.step = step + 1
            last = done == loop.steps
            if bar is not None:
                bar.update(1)
            elif watch.timed(done):
                if rt.rank == 0:
                    print(watch.estimate(), file=sys.stderr, flush=True)
                bar = _progress_bar(loop, done, rt)
            stopping, lost = False, ""
            if done % every.log == 0 or done % every.checkpoint == 0 or last:
                lost = tracker.lost
                means, stopping = _reduce(sums, count, stop.requested or bool(lost), rt)
                _report(loop, state, means, validate=done % every.val == 0 or last, tracker=tracker)
                if bar is not None:
                    bar.set_postfix({k: f"{v:.4g}" for k, v in means.items()}, refresh=False)
                sums, count = {}, 0
            if done % every.checkpoint == 0 or last or stopping:
                loop.save(state)
            if stopping and not last:
                if bar is not None:
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
    if bar is not None:
        bar.close()


def _progress_bar(loop: Loop, done: int, rt: Runtime) -> tqdm:
    """The stage's bar from update `done` on, with tqdm's rate and time left (on rank 0)."""
    return tqdm(
        total=loop.steps,
        initial=done,
        desc=loop.stage,
        unit="step",
        dynamic_ncols=True,
        file=sys.stderr,
        disable=rt.rank != 0,
    )


class _Stopwatch:
    """Times this execution's first updates for the expected wall time of the rest of the
    schedule: updates at the measured rate plus validations at `validation_s` (the step-0
    validation's time; NaN on a resumed run, which says so)."""

    def __init__(self, loop: Loop, every: Intervals, start: int, rt: Runtime, validation_s: float) -> None:
        self.loop, self.every, self.start, self.rt, self.validation_s = loop, every, start, rt, validation_s
        self._origin = (start, time.perf_counter())  # (updates done, clock) the timing starts at
        self._end = self._origin

    def timed(self, done: int) -> bool:
        """Whether the warm-up is over after `done` updates. The first update of an execution
        carries the one-off costs, so the timing starts after it (unless it is the only one).
        The device is waited for only where the clock is read for the estimate (twice), so the
        timed updates overlap host and device as every later one does."""
        if done == self.start + 1 and done < self.loop.steps:
            self.rt.synchronize()
            self._origin = (done, time.perf_counter())
            return False
        if done < self.loop.steps and time.perf_counter() - self._origin[1] < WARMUP_S:
            return False
        self.rt.synchronize()
        self._end = (done, time.perf_counter())
        return True

    def estimate(self) -> str:
        """The first line: the expected wall time of the whole schedule left, and its basis."""
        (origin, began), (done, now) = self._origin, self._end
        due = range(self.every.val, self.loop.steps + 1, self.every.val)
        return expected_time(
            self.loop.stage,
            self.loop.steps - self.start,
            (done - origin) / max(now - began, 1e-9),
            (origin + 1, done),
            len({s for s in due if s > self.start} | {self.loop.steps}),
            self.validation_s,
            self.rt,
        )


def expected_time(
    stage: str,
    updates: int,
    rate: float,
    timed: tuple[int, int],
    validations: int,
    validation_s: float,
    rt: Runtime,
) -> str:
    """What a training stage says first: `updates` at the `rate` measured over the `timed` updates,
    plus `validations` of `validation_s` each (NaN: not timed, on a resumed run), on `rt`'s device.
    A CPU run that `runtime.device: auto` settled for (`rt.cpu_because`), expected to take longer
    than `LONG_CPU_RUN_S`, adds a warning line with the reason there is no GPU."""
    basis = f"{rate:.3g} updates/s over updates {timed[0]}-{timed[1]}"
    total_s = updates / rate
    if math.isnan(validation_s):
        basis += "; validation not timed on a resumed run"
    else:
        total_s += validations * validation_s
        basis += f", {validations} validations of {validation_s:.2g} s"
    hardware = rt.describe()["runtime.hardware"]
    line = (
        f"{stage}: {updates} updates on {rt.device.type} ({hardware}, {rt.precision}), "
        f"expected to take about {_duration(total_s)} ({basis})"
    )
    if rt.cpu_because and total_s > LONG_CPU_RUN_S:
        line += (
            f"\nwarning: {stage} runs on the CPU because runtime.device: auto found no usable GPU "
            f"({rt.cpu_because}); about {_duration(total_s)}: set runtime.device=cuda to require a GPU, "
            f"or fewer {stage}.steps"
        )
    return line


def _duration(seconds: float) -> str:
    """3725 → "1 h 2 min"; 95 → "1 min 35 s"; 2.5 days as "2 d 12 h"."""
    seconds = round(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


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
