"""The two training stages, each a `TrainingStage` description run by one `TrainingJob`.

`pretrain` trains SRResNet on pixel MSE; `train_gan` trains SRGAN from it. What they share
(resume, loop, validation, checkpoints, lineage, outs) is `TrainingJob`; what differs is the
description. The stage's `main()` opens the MLflow run and hands its tracker to `TrainingJob.run`.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from srgan.core.atomic import write_text
from srgan.core.config import Params, PretrainParams, TrainParams, flatten
from srgan.core.errors import SrganError
from srgan.core.provenance import dataset_digest
from srgan.core.runtime import Runtime, resolve_runtime, seed_everything
from srgan.data.batches import RandomCrops, Shards, batch_loader, to_float
from srgan.models import checkpoint
from srgan.models.networks import Discriminator, build_generator, icnr_
from srgan.models.zoo import body_of, load_start
from srgan.tracking.tracker import Tracker
from srgan.training import distributed
from srgan.training.loop import Intervals, Loop, LoopState, Scalars, run_loop
from srgan.training.losses import ContentLoss, GeneratorLoss
from srgan.training.resume import checkpoint_path, finished_mark, resume, save
from srgan.training.steps import (
    VALIDATION,
    adam,
    discriminator_step,
    freeze_batchnorm,
    generator_step,
    mse_step,
    set_learning_rate,
    validate,
)

ValPairs = tuple[torch.Tensor, torch.Tensor]  # uint8 LR (N, 3, h, w), HR (N, 3, H, W)
Batch = tuple[torch.Tensor, torch.Tensor]  # LR (N, 3, h, w), HR (N, 3, H, W): float RGB in [0, 1] on the device
VALIDATION_FIGURE = "validation.png"  # the last validation grid, at the run's artifact root


@dataclass(frozen=True)
class TrainingStage:
    """What one training stage is; `TrainingJob` derives the rest from its params section.

    `name` is the stage ("pretrain" or "train"): its params section (steps, batch and crop size,
    intervals), its MLflow stage tag and its `.cache` folder. `step(i, next_batch)` performs update
    i, drawing `batches_per_step` batches from `next_batch`; batch k of the run is a function of
    (`seed`, k). `modules` and `optimizers` are what a checkpoint holds, by name; `generator` is
    validated. `inputs` are the files whose bytes, with the params, key the checkpoint. `data` (the
    prepared folder) and `models_in` (model files it starts from, by role) are recorded as the run's
    lineage, and `tags` (what it starts from: `init.spec`, `init.sha256`) on its run. `finish(tracker,
    state)` writes the outs after the last step.
    """

    name: str
    seed: int
    batches_per_step: int
    step: Callable[[int, Callable[[], Batch]], Scalars]
    generator: nn.Module
    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    inputs: list[Path]
    data: Path
    models_in: dict[str, Path]
    tags: dict[str, str]
    finish: Callable[[Tracker, LoopState], None]


def pretrain(params: Params, data_dir: Path, out: Path, curves_path: Path) -> TrainingJob:
    """SRResNet on pixel MSE, from scratch or from the generator `pretrain.init` names, writing the
    generator to `out`: the job, ready to run."""
    p = params.pretrain
    rt, shards, val = _setup(params, data_dir, "pretrain.batch_size", p.batch_size)
    config = checkpoint.params_config(params)
    start = load_start(p.init, config)  # refused here too when the stage runs by hand
    gen = build_generator(config)
    if start is not None:
        gen.load_state_dict(body_of(start.generator, gen), strict=start.generator.upsampler == gen.upsampler)
    elif p.icnr:
        icnr_(gen)
    gen = distributed.sync_batchnorm(gen, rt).to(rt.device, memory_format=torch.channels_last).train()
    trained_gen = distributed.wrap(gen, rt)
    opt = adam(gen, p.learning_rate)

    def step(i: int, next_batch: Callable[[], Batch]) -> Scalars:
        set_learning_rate([opt], p.learning_rate, p.decay_at, p.steps, i)
        return mse_step(trained_gen, opt, *next_batch(), rt)

    def finish(tracker: Tracker, state: LoopState) -> None:
        checkpoint.save_generator(out, gen, config)
        _write_curves(curves_path, state.curves, ["step", "loss", *VALIDATION])
        tracker.log_generator(out)
        tracker.record_output(out)

    stage = TrainingStage(
        name="pretrain",
        seed=params.seed,
        batches_per_step=1,
        step=step,
        generator=gen,
        modules={"generator": gen},
        optimizers={"opt_g": opt},
        inputs=[data_dir / "manifest.json", *([start.file] if start and start.file else [])],
        data=data_dir,
        models_in={"init": start.file} if start and start.file else {},
        tags=start.tags if start else {"init.spec": p.init},
        finish=finish,
    )
    return TrainingJob(stage, params, rt, shards, val)


def train_gan(params: Params, data_dir: Path, init: Path, out: Path, disc_out: Path, curves_path: Path) -> TrainingJob:
    """SRGAN from the SRResNet in `init`, writing the generator and the discriminator: the job,
    ready to run."""
    p = params.train
    rt, shards, val = _setup(params, data_dir, "train.batch_size", p.batch_size)
    content = ContentLoss(p.content_loss, p.vgg_weights, p.vgg_activation)  # fails here, before training
    # channels_last like the images it compares (the generator's output is): no per-call copies of
    # VGG's weights into that layout (the same bits on the CPU, measured).
    loss = GeneratorLoss(content, p.pixel_weight, p.adv_weight).to(rt.device, memory_format=torch.channels_last)
    config = checkpoint.params_config(params)
    gen = distributed.sync_batchnorm(checkpoint.load_generator(init, expect=config), rt)
    gen = gen.to(rt.device, memory_format=torch.channels_last).train()
    disc_config = {"channels": params.model.d_channels, "norm": params.model.d_norm}
    disc = distributed.sync_batchnorm(Discriminator(**disc_config), rt)
    disc = disc.to(rt.device, memory_format=torch.channels_last).train()
    trained_gen, trained_disc = distributed.wrap(gen, rt), distributed.wrap(disc, rt)
    opt_g = adam(gen, p.learning_rate)
    opt_d = adam(disc, p.learning_rate)

    def step(i: int, next_batch: Callable[[], Batch]) -> Scalars:
        set_learning_rate([opt_g, opt_d], p.learning_rate, p.decay_at, p.steps, i)
        if p.freeze_bn:
            freeze_batchnorm(gen)
        # The D step's fakes need no gradient and the G step's D is frozen: those passes use
        # the plain modules, so DDP only averages the gradients that train.
        d_scalars = [discriminator_step(gen, trained_disc, opt_d, *next_batch(), rt) for _ in range(p.d_steps)]
        g_scalars = generator_step(trained_gen, disc, opt_g, loss, *next_batch(), rt)
        return {**g_scalars, **{k: torch.stack([s[k] for s in d_scalars]).mean() for k in d_scalars[0]}}

    def finish(tracker: Tracker, state: LoopState) -> None:
        checkpoint.save_generator(out, gen, config)
        checkpoint.save_discriminator(disc_out, disc, disc_config)
        _write_curves(
            curves_path,
            state.curves,
            ["step", "g_content", "g_pixel", "g_adv", "d_real", "d_fake", "d_x", "d_g_z", *VALIDATION],
        )
        tracker.register_generator(tracker.log_generator(out))
        tracker.record_output(out)

    stage = TrainingStage(
        name="train",
        seed=params.seed + 1,
        batches_per_step=p.d_steps + 1,  # k D steps and one G step, each on a fresh batch
        step=step,
        generator=gen,
        modules={"generator": gen, "discriminator": disc},
        optimizers={"opt_g": opt_g, "opt_d": opt_d},
        inputs=[data_dir / "manifest.json", init],
        data=data_dir,
        models_in={"srresnet": init},
        tags={},
        finish=finish,
    )
    return TrainingJob(stage, params, rt, shards, val)


class TrainingJob:
    """A training stage ready to run: models built, resumed from its checkpoint if one exists.

    The stage's `main()` opens the MLflow run (`run_params`, `lead`, `resume_run_id`) and calls
    `run(tracker)`. Under torchrun every process resumes from the same checkpoint and trains;
    only the lead process (rank 0) validates, logs, writes checkpoints and the outs.
    """

    def __init__(self, stage: TrainingStage, params: Params, rt: Runtime, shards: Shards, val: ValPairs) -> None:
        self.stage, self.params, self.rt, self.val = stage, params, rt, val
        self.section = getattr(params, stage.name)
        self.path = checkpoint_path(stage.name, params, rt, ("seed", "scale", "model", stage.name), stage.inputs)
        self.state = resume(stage.name, stage.modules, stage.optimizers, self.path, rt)
        self.lead = rt.rank == 0
        self.run_params = {**flatten(params), **rt.describe()}
        self._next_batch = _batch_source(stage, self.section, params, rt, shards, start=self.state.step)

    @property
    def resume_run_id(self) -> str:
        """The MLflow run an interrupted execution logged to (from the checkpoint), or ""."""
        return self.state.run_id

    def run(self, tracker: Tracker) -> None:
        """Loop to the last step, then write the outs."""
        self.state.run_id = tracker.run_id
        tracker.resend(self.state.unsent)  # what an interrupted execution could not send
        tracker.log_dataset("prepared", self.stage.data, dataset_digest(self.stage.data), context="training")
        tracker.link_inputs(self.stage.models_in)
        tracker.set_tags(self.stage.tags)
        loop = Loop(
            stage=self.stage.name,
            steps=self.section.steps,
            intervals=Intervals.spread(self.section.val_every, self.section.checkpoint_every, self.section.steps),
            step=lambda i: self.stage.step(i, self._next_batch),
            validate=lambda step: self._validate(tracker, step),
            save=lambda s: (
                save(self.stage.modules, self.stage.optimizers, self.path, s, tracker.unsent()) if self.lead else None
            ),
        )
        run_loop(loop, self.state, tracker, self.rt)
        self._check_ranks_agree()
        if self.lead:
            self.stage.finish(tracker, self.state)
            write_text(finished_mark(self.path), f"step {self.state.step}: outs written and logged\n")

    def _check_ranks_agree(self) -> None:
        """Under torchrun, refuse to write outs unless every process ends with the same weights
        (rank 0's are written; the others' must not have drifted)."""
        if self.rt.world_size == 1:
            return
        if not distributed.identical_parameters(list(self.stage.modules.values()), self.rt):
            raise SrganError(f"{self.stage.name}: the processes ended with different weights; no outs written")
        if self.lead:
            print(
                f"{self.stage.name}: weights identical on all {self.rt.world_size} processes after step "
                f"{self.state.step}",
                file=sys.stderr,
            )

    def _validate(self, tracker: Tracker, step: int) -> dict[str, float]:
        if not self.lead:
            return dict.fromkeys(VALIDATION, float("nan"))
        scores, grid = validate(self.stage.generator, *self.val, self.params.scale, self.rt)
        tracker.log_image(grid, key="validation", step=step)  # the step slider
        if step == self.section.steps:  # the last grid, by a name every training run shares
            tracker.log_figure(grid, VALIDATION_FIGURE)
        return scores


def _batch_source(
    stage: TrainingStage,
    section: PretrainParams | TrainParams,
    params: Params,
    rt: Runtime,
    shards: Shards,
    *,
    start: int,
) -> Callable[[], Batch]:
    """The next batch of the stage's run on each call, from the one of update `start` on."""
    # Each process reads only its share of every global batch.
    batches = RandomCrops(
        shards,
        batch_size=section.batch_size,
        crop_size=section.crop_size,
        scale=params.scale,
        seed=stage.seed,
        part=(rt.rank, rt.world_size),
    )
    per_step = stage.batches_per_step
    loader = iter(
        batch_loader(
            batches,
            start=start * per_step,
            stop=section.steps * per_step,
            workers=params.runtime.workers,
            pin_memory=rt.device.type == "cuda",
        )
    )

    def next_batch() -> Batch:
        lr_img, hr_img = next(loader)
        return to_float(lr_img, rt.device), to_float(hr_img, rt.device)

    return next_batch


def _setup(params: Params, data_dir: Path, batch_key: str, batch_size: int) -> tuple[Runtime, Shards, ValPairs]:
    """The runtime (torchrun's process group included), the seeds, the training shards and the
    validation pairs (uint8 (N, 3, h, w) LR, (N, 3, H, W) HR)."""
    rt = distributed.setup(resolve_runtime(params.runtime), {batch_key: batch_size})
    # Training batches keep one shape, so cuDNN's search for the fastest kernels pays once.
    torch.backends.cudnn.benchmark = rt.device.type == "cuda"
    seed_everything(params.seed)
    shards = Shards(data_dir / "train")
    val = Shards(data_dir / "val").all_pairs()
    return rt, shards, val


def _write_curves(path: Path, curves: list[dict[str, float]], columns: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in curves:
        writer.writerow({k: (int(v) if k == "step" else f"{v:.6g}") for k, v in row.items() if k in columns})
    write_text(path, buffer.getvalue())
