"""Training: small step functions, one loop, and the two stages built from them.

`mse_step` trains SRResNet; `discriminator_step` and `generator_step` are the reference slides' SRGAN
algorithm (k D steps on fresh batches, then one G step; D frozen during the G step, fakes
detached for the D step). `run_loop` knows nothing of models: it calls a step function, reports
scalars at log intervals, validates, checkpoints, and stops cleanly on Ctrl-C.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from srgan import checkpoint, distributed
from srgan.atomic import write_text
from srgan.config import Params, flatten
from srgan.data import RandomCrops, Shards, batch_loader, to_float
from srgan.errors import SrganError
from srgan.losses import ContentLoss, adversarial_loss, discriminator_loss
from srgan.models import Discriminator, Generator
from srgan.runtime import Runtime, project_root, resolve_runtime, seed_everything
from srgan.tracking import Tracker, stage_run

Scalars = dict[str, torch.Tensor]


# --- step functions ------------------------------------------------------------------------

def mse_step(gen: nn.Module, opt: torch.optim.Optimizer, lr_img: torch.Tensor, hr_img: torch.Tensor, rt: Runtime) -> Scalars:
    """One SRResNet update on pixel MSE. lr_img (N, 3, h, w), hr_img (N, 3, H, W), both in [0, 1]."""
    with rt.autocast():
        sr_img = gen(lr_img)  # (N, 3, H, W), ~[0, 1]
    loss = F.mse_loss(sr_img.float(), hr_img)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {"loss": loss.detach()}


def discriminator_step(
    gen: nn.Module, disc: nn.Module, opt_d: torch.optim.Optimizer, lr_img: torch.Tensor, hr_img: torch.Tensor, rt: Runtime
) -> Scalars:
    """One D update: real HR against detached G(LR). Returns both BCE terms and mean D outputs."""
    with torch.no_grad(), rt.autocast():
        fake_img = gen(lr_img)
    with rt.autocast():
        real_logits = disc(hr_img).float()
        fake_logits = disc(fake_img.detach()).float()
    d_real, d_fake = discriminator_loss(real_logits, fake_logits)
    opt_d.zero_grad(set_to_none=True)
    (d_real + d_fake).backward()
    opt_d.step()
    return {
        "d_real": d_real.detach(),
        "d_fake": d_fake.detach(),
        "d_x": torch.sigmoid(real_logits.detach()).mean(),
        "d_g_z": torch.sigmoid(fake_logits.detach()).mean(),
    }


def generator_step(
    gen: nn.Module,
    disc: nn.Module,
    opt_g: torch.optim.Optimizer,
    content_loss: nn.Module,
    adv_weight: float,
    lr_img: torch.Tensor,
    hr_img: torch.Tensor,
    rt: Runtime,
) -> Scalars:
    """One G update on content + adv_weight · (−log D(G(x))), with D frozen."""
    disc.requires_grad_(False)
    try:
        with rt.autocast():
            sr_img = gen(lr_img)
            fake_logits = disc(sr_img).float()
            content = content_loss(sr_img, hr_img)
        adversarial = adversarial_loss(fake_logits)
        opt_g.zero_grad(set_to_none=True)
        (content + adv_weight * adversarial).backward()
        opt_g.step()
    finally:
        disc.requires_grad_(True)
    return {"g_content": content.detach(), "g_adv": adversarial.detach()}


# --- validation ----------------------------------------------------------------------------

@torch.no_grad()
def validate(gen: nn.Module, lr_val: torch.Tensor, hr_val: torch.Tensor, scale: int, rt: Runtime) -> tuple[float, np.ndarray]:
    """Mean PSNR (RGB, 0–255, border crop = scale) over the validation patches, and an image grid.

    lr_val / hr_val: uint8 (N, 3, h, w) / (N, 3, H, W). The grid is uint8 (rows·H, 3·W, 3):
    per row LR (nearest-upscaled) | SR | HR for the first four patches.
    """
    was_training = gen.training
    gen.eval()
    psnrs, sr_batches = [], []
    for start in range(0, len(lr_val), 8):
        lr_img = to_float(lr_val[start : start + 8], rt.device)
        with rt.autocast():
            sr_img = gen(lr_img)
        sr_img = sr_img.float().clamp(0, 1).mul(255).round()  # (n, 3, H, W) in 0..255, integral
        hr_img = hr_val[start : start + 8].to(rt.device).float()
        c = scale
        mse = (sr_img - hr_img)[..., c:-c, c:-c].pow(2).mean(dim=(1, 2, 3))
        psnrs.append(10 * torch.log10(255**2 / mse.clamp_min(1e-10)))
        sr_batches.append(sr_img.to(torch.uint8).cpu())
    gen.train(was_training)
    rows = []
    sr_all = torch.cat(sr_batches)
    for i in range(min(4, len(lr_val))):
        lr_up = F.interpolate(lr_val[i : i + 1].float(), scale_factor=scale, mode="nearest")[0].to(torch.uint8)
        rows.append(torch.cat([lr_up, sr_all[i], hr_val[i]], dim=2))  # (3, H, 3W)
    grid = torch.cat(rows, dim=1).permute(1, 2, 0).numpy()  # (rows·H, 3W, 3) uint8 RGB
    return float(torch.cat(psnrs).mean()), grid


# --- the loop ------------------------------------------------------------------------------

@dataclass
class LoopState:
    """What a checkpoint restores besides weights: the next step, the curve rows so far, and the
    MLflow run they were logged to (continued on resume)."""

    step: int = 0
    curves: list[dict[str, float]] = field(default_factory=list)
    val_psnr: float = float("nan")
    run_id: str = ""


# Curves get a point at least every 10 steps and at the last step.
LOG_EVERY = 10


@dataclass(frozen=True)
class Intervals:
    val: int
    checkpoint: int
    log: int = LOG_EVERY


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


def run_loop(
    *,
    stage: str,
    state: LoopState,
    steps: int,
    step_fn: Callable[[int], Scalars],
    intervals: Intervals,
    validate_fn: Callable[[int], float],
    save_fn: Callable[[LoopState], None],
    tracker: Tracker,
    rt: Runtime,
) -> None:
    """Run steps `state.step` .. `steps`-1. Losses stay on the device between log steps (no
    per-step host sync); at log steps they are averaged (over processes too), checked for
    NaN/inf, logged, and added to `state.curves`, and a Ctrl-C is honoured (all processes stop
    at the same step). A checkpoint is never written from non-finite weights."""
    if state.step == 0:
        state.val_psnr = validate_fn(0)
        tracker.log_metrics({"val_psnr": state.val_psnr}, step=0)
    sums: dict[str, torch.Tensor] = {}
    count = 0
    bar = tqdm(total=steps, initial=state.step, desc=stage, unit="step", dynamic_ncols=True, file=sys.stderr,
               disable=rt.rank != 0)
    with _StopFlag() as stop:
        for step in range(state.step, steps):
            scalars = step_fn(step)
            for key, value in scalars.items():
                sums[key] = sums[key] + value if key in sums else value.clone()
            count += 1
            done = step + 1
            state.step = done
            last = done == steps
            stopping = False
            if done % intervals.log == 0 or done % intervals.checkpoint == 0 or last:
                # One reduction carries the loss sums and every process's stop request.
                keys = sorted(sums)
                packed = torch.cat([torch.stack([sums[key].float() for key in keys]) / count,
                                    torch.tensor([float(stop.requested)], device=rt.device)])
                *values, stop_votes = distributed.mean_over_ranks(packed, rt).tolist()  # the one host sync
                means = dict(zip(keys, values))
                stopping = stop_votes > 0
                bad = {k: v for k, v in means.items() if not math.isfinite(v)}
                if bad:
                    raise SrganError(
                        f"{stage}: loss {', '.join(f'{k}={v}' for k, v in bad.items())} at step {done}; the last good "
                        "checkpoint is kept. Lower the learning rate or check the data, then run again"
                    )
                if done % intervals.val == 0 or last:
                    state.val_psnr = validate_fn(done)
                    means["val_psnr"] = state.val_psnr
                tracker.log_metrics(means, step=done)
                state.curves.append({"step": done, **means, "val_psnr": state.val_psnr})
                bar.set_postfix({k: f"{v:.4g}" for k, v in means.items()}, refresh=False)
                sums, count = {}, 0
            bar.update(1)
            if done % intervals.checkpoint == 0 or last or stopping:
                save_fn(state)
            if stopping and not last:
                bar.close()
                # Raised, not exited: the MLflow run ends KILLED on the way out (`stage_run`).
                raise KeyboardInterrupt(
                    f"{stage}: interrupted at step {done}/{steps}; checkpoint saved. "
                    "Run `dvc repro` (or the same command) again to resume from it." if rt.rank == 0 else ""
                )
    bar.close()


# --- the two stages ------------------------------------------------------------------------

def _checkpoint_path(stage: str, params: Params, rt: Runtime, sections: tuple[str, ...], inputs: list[Path]) -> Path:
    """`.cache/<stage>/<hash>/last.pt`: outside DVC's outs, keyed by the stage's params, the
    resolved device, precision and process count, and its inputs, so a run with the same settings
    resumes and a changed one (an fp32 run after a bf16 one included) starts afresh."""
    flat = flatten(params)
    keys = {k: v for k, v in flat.items() if k.split(".")[0] in sections}
    keys.update({"device": rt.device.type, "precision": rt.precision, "world_size": rt.world_size})
    digest = hashlib.sha256(json.dumps(keys, sort_keys=True).encode())
    for path in inputs:
        digest.update(path.read_bytes())
    return project_root() / ".cache" / stage / digest.hexdigest()[:16] / "last.pt"


def _write_curves(path: Path, curves: list[dict[str, float]], columns: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in curves:
        writer.writerow({k: (int(v) if k == "step" else f"{v:.6g}") for k, v in row.items() if k in columns})
    write_text(path, buffer.getvalue())


def _learning_rate(base: float, decay_at: float, steps: int, step: int) -> float:
    """The paper's schedule: `base`, then base/10 from `decay_at` of the way on."""
    return base if step < decay_at * steps else base * 0.1


def _set_learning_rate(opt: torch.optim.Optimizer, value: float) -> None:
    for group in opt.param_groups:
        group["lr"] = value


def adam(model: nn.Module, learning_rate: float) -> torch.optim.Optimizer:
    """The paper's Adam (β = 0.9, 0.999) with PyTorch's fused kernel, which CPU and CUDA both have."""
    return torch.optim.Adam(model.parameters(), lr=learning_rate, betas=(0.9, 0.999), fused=True)


def _generator(params: Params) -> tuple[Generator, dict[str, Any]]:
    config = checkpoint.generator_config(params.scale, params.model.blocks, params.model.channels, params.model.bicubic_skip)
    return Generator(**config), config


StepFactory = Callable[[int], Callable[[int], Scalars]]


def _run_stage(
    *,
    stage: str,
    params: Params,
    rt: Runtime,
    val: tuple[torch.Tensor, torch.Tensor],
    gen: nn.Module,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    ckpt_path: Path,
    steps: int,
    intervals: Intervals,
    make_step: StepFactory,
    finish: Callable[[Tracker, LoopState], None],
) -> None:
    """What both training stages share: resume from `ckpt_path`, track, loop, then `finish`.

    `make_step(start)` returns the step function for steps `start`.. (its batch loader starts there).
    Under torchrun every process resumes from the same checkpoint and trains; only rank 0
    validates, logs to MLflow, writes checkpoints and runs `finish` (the outs).
    """
    state = LoopState()
    if ckpt_path.exists():
        saved = checkpoint.load(ckpt_path, checkpoint.TRAINING_FORMAT)
        for name, module in modules.items():
            module.load_state_dict(saved[name])
        for name, opt in optimizers.items():
            opt.load_state_dict(saved[name])
        state = LoopState(saved["step"], saved["curves"], saved["val_psnr"], saved.get("mlflow_run_id", ""))
        print(f"{stage}: resuming from step {state.step} ({ckpt_path})", file=sys.stderr)
    if not distributed.agree(state.step, rt):
        raise SrganError(
            f"{stage}: the processes found different checkpoints at {ckpt_path} (rank {rt.rank} starts at step "
            f"{state.step}); across machines, put the project's .cache on a shared filesystem, or delete it to start afresh"
        )

    lead = rt.rank == 0

    def save(s: LoopState) -> None:
        if not lead:
            return
        payload: dict[str, Any] = {"format": checkpoint.TRAINING_FORMAT, "step": s.step, "curves": s.curves,
                                   "val_psnr": s.val_psnr, "mlflow_run_id": s.run_id}
        payload.update({name: checkpoint.cpu_state_dict(m) for name, m in modules.items()})
        payload.update({name: opt.state_dict() for name, opt in optimizers.items()})
        checkpoint.save(ckpt_path, payload)

    with stage_run(stage, {**flatten(params), **rt.describe()}, enabled=lead, resume=state.run_id) as tracker:
        state.run_id = tracker.run_id
        def validate_fn(step: int) -> float:
            if not lead:
                return float("nan")
            psnr, grid = validate(gen, *val, params.scale, rt)
            tracker.log_image(grid, f"grids/step_{step:07d}.png")
            return psnr

        run_loop(stage=stage, state=state, steps=steps, step_fn=make_step(state.step), intervals=intervals,
                 validate_fn=validate_fn, save_fn=save, tracker=tracker, rt=rt)
        if lead:
            finish(tracker, state)
    distributed.teardown()


def _stage_setup(params: Params, data_dir: Path, batch_key: str, batch_size: int) -> tuple[Runtime, Shards, tuple[torch.Tensor, torch.Tensor]]:
    rt = distributed.setup(resolve_runtime(params.runtime), {batch_key: batch_size})
    seed_everything(params.seed)
    shards = Shards(data_dir / "train")
    val = Shards(data_dir / "val").all_pairs()
    return rt, shards, val


def _loader(batches: RandomCrops, start: int, stop: int, params: Params, rt: Runtime) -> Any:
    # Each process reads only its share of every global batch.
    return iter(batch_loader(batches, start=start, stop=stop, workers=params.runtime.workers, pin_memory=rt.device.type == "cuda"))


def pretrain(params: Params, data_dir: Path, out: Path, curves_path: Path) -> None:
    """Train SRResNet on pixel MSE and write the generator to `out`."""
    p = params.pretrain
    rt, shards, val = _stage_setup(params, data_dir, "pretrain.batch_size", p.batch_size)
    gen, config = _generator(params)
    gen = gen.to(rt.device, memory_format=torch.channels_last).train()
    trained_gen = distributed.wrap(gen, rt)
    opt = adam(gen, p.learning_rate)
    batches = RandomCrops(shards, batch_size=p.batch_size, crop_size=p.crop_size, scale=params.scale, seed=params.seed,
                          part=(rt.rank, rt.world_size))

    def make_step(start: int) -> Callable[[int], Scalars]:
        loader = _loader(batches, start, p.steps, params, rt)

        def step_fn(step: int) -> Scalars:
            lr_img, hr_img = next(loader)
            _set_learning_rate(opt, _learning_rate(p.learning_rate, p.decay_at, p.steps, step))
            return mse_step(trained_gen, opt, to_float(lr_img, rt.device), to_float(hr_img, rt.device), rt)

        return step_fn

    def finish(tracker: Tracker, state: LoopState) -> None:
        checkpoint.save_generator(out, gen, config)
        _write_curves(curves_path, state.curves, ["step", "loss", "val_psnr"])
        tracker.log_generator(_plain_copy(gen, config))

    _run_stage(
        stage="pretrain", params=params, rt=rt, val=val, gen=gen,
        modules={"generator": gen}, optimizers={"opt_g": opt},
        ckpt_path=_checkpoint_path("pretrain", params, rt, ("seed", "scale", "model", "pretrain"), [data_dir / "manifest.json"]),
        steps=p.steps, intervals=Intervals(p.val_every, p.checkpoint_every),
        make_step=make_step, finish=finish,
    )


def train_gan(params: Params, data_dir: Path, init: Path, out: Path, disc_out: Path, curves_path: Path) -> None:
    """Train SRGAN from the SRResNet in `init`; write the generator and the discriminator."""
    p = params.train
    rt, shards, val = _stage_setup(params, data_dir, "train.batch_size", p.batch_size)
    content_loss = ContentLoss(p.content_loss, p.vgg_weights).to(rt.device)  # fails here, before training
    _, config = _generator(params)
    gen = checkpoint.load_generator(init, expect=config).to(rt.device, memory_format=torch.channels_last).train()
    disc = Discriminator(params.model.d_channels).to(rt.device, memory_format=torch.channels_last).train()
    trained_gen, trained_disc = distributed.wrap(gen, rt), distributed.wrap(disc, rt)
    opt_g = adam(gen, p.learning_rate)
    opt_d = adam(disc, p.learning_rate)
    # Each iteration takes d_steps + 1 fresh batches: number (d_steps + 1)·step + k.
    per_step = p.d_steps + 1
    batches = RandomCrops(shards, batch_size=p.batch_size, crop_size=p.crop_size, scale=params.scale, seed=params.seed + 1,
                          part=(rt.rank, rt.world_size))

    def make_step(start: int) -> Callable[[int], Scalars]:
        loader = _loader(batches, start * per_step, p.steps * per_step, params, rt)

        def next_batch() -> tuple[torch.Tensor, torch.Tensor]:
            lr_img, hr_img = next(loader)
            return to_float(lr_img, rt.device), to_float(hr_img, rt.device)

        def step_fn(step: int) -> Scalars:
            rate = _learning_rate(p.learning_rate, p.decay_at, p.steps, step)
            _set_learning_rate(opt_g, rate)
            _set_learning_rate(opt_d, rate)
            # The D step's fakes need no gradient and the G step's D is frozen: those passes use
            # the plain modules, so DDP only averages the gradients that train.
            d_scalars = [discriminator_step(gen, trained_disc, opt_d, *next_batch(), rt) for _ in range(p.d_steps)]
            g_scalars = generator_step(trained_gen, disc, opt_g, content_loss, p.adv_weight, *next_batch(), rt)
            return {**g_scalars, **{k: torch.stack([s[k] for s in d_scalars]).mean() for k in d_scalars[0]}}

        return step_fn

    def finish(tracker: Tracker, state: LoopState) -> None:
        checkpoint.save_generator(out, gen, config)
        checkpoint.save_discriminator(disc_out, disc, params.model.d_channels)
        _write_curves(curves_path, state.curves, ["step", "g_content", "g_adv", "d_real", "d_fake", "d_x", "d_g_z", "val_psnr"])
        tracker.log_generator(_plain_copy(gen, config))

    _run_stage(
        stage="train", params=params, rt=rt, val=val, gen=gen,
        modules={"generator": gen, "discriminator": disc}, optimizers={"opt_g": opt_g, "opt_d": opt_d},
        ckpt_path=_checkpoint_path("train", params, rt, ("seed", "scale", "model", "train"), [data_dir / "manifest.json", init]),
        steps=p.steps, intervals=Intervals(p.val_every, p.checkpoint_every),
        make_step=make_step, finish=finish,
    )


def _plain_copy(gen: nn.Module, config: dict[str, Any]) -> Generator:
    """An fp32, contiguous-format CPU copy of the generator, as users load it."""
    plain = Generator(**config)
    plain.load_state_dict(checkpoint.cpu_state_dict(gen))
    return plain.eval()
