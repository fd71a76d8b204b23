"""Training throughput of the pipeline's step functions against a plain fp32 loop.

    python benchmarks/train_throughput.py [--device cpu|cuda] [--reps 5]
        [--compile-modes default,max-autotune-no-cudagraphs] [--checkpoint] [--json]

Shared CPUs are noisy, so no figure stands alone: every workload is measured as a plain fp32
PyTorch loop of the same model (the reference: fp32, contiguous NCHW, for-loop Adam, no
autocast) and the pipeline's own path (`srgan.training.steps` functions under bf16 autocast,
channels_last models and inputs through `srgan.data.batches.to_float`, fused Adam from `srgan.training.steps.adam`,
the generator's sub-pixel tail),
run one step each in turn, `--reps` times, after one untimed warm-up step each. The ratio is the
median over repetitions of the reference's step time over the candidate's, taken within a
repetition so that load which drifts between repetitions cancels. GFLOP/s counts the
convolution and matrix-product FLOPs of one step (`FlopCounterMode`, measured on the reference's
warm-up; bf16 does the same arithmetic). A GAN iteration is `d_steps` = 1 discriminator step and
one generator step on fresh batches, as the pipeline runs it, so it processes 2 batches.

The `+compile` columns wrap the trained modules in `torch.compile` as `runtime.compile: true`
does (`srgan.training.distributed.wrap`): on the CPU for the SRResNet step at the default patch,
on CUDA for every workload; the compile time (first step minus a steady step, with an empty
Inductor cache) and the number of steps after which it pays for itself are reported beside them.

On CUDA (`--device cuda`) the pipeline runs at `runtime.precision: auto`'s precision for the GPU
(bf16 from compute capability 8.0), every step is timed to the device's end (synchronised), and
a `+cudnn.benchmark` variant runs the pipeline's path with cuDNN's kernel search on, as the
training stages set it, while the others run with it off. `--checkpoint` also times writing the
SRGAN stage's checkpoint at the paper's model size (`srgan.training.resume.save`: G, D and both
Adam states, fsync'd and renamed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch._inductor.utils import fresh_cache
from torch.utils.flop_counter import FlopCounterMode

from srgan.core.runtime import Runtime, auto_precision, cpu_name
from srgan.data.batches import to_float
from srgan.models.networks import Discriminator, Generator
from srgan.training.loop import LoopState
from srgan.training.losses import ContentLoss, GeneratorLoss, adversarial_loss, discriminator_loss
from srgan.training.resume import save
from srgan.training.steps import adam, discriminator_step, generator_step, mse_step

LEARNING_RATE = 1e-4
ADV_WEIGHT = 1e-3
REFERENCE = "fp32 plain"
CANDIDATE = "auto+channels_last+fused+subpixel"  # auto: bf16 on this CPU or GPU where it is native
# The reference with only the generator's sub-pixel tail (SRResNet workloads): how much of the
# speed-up is the reformulated tail, which helps fp32 too, and how much the rest of the fast path.
REFERENCE_SUBPIXEL = "fp32 plain+subpixel"
CPU = torch.device("cpu")
CUDNN_BENCHMARK = f"{CANDIDATE}+cudnn.benchmark"
Step = Callable[[], None]


@dataclass(frozen=True)
class Workload:
    """One training step to measure: which step, at which patch, on which model size.

    `content` is None for the SRResNet MSE step, else the SRGAN content loss (`mse`, `vgg22`, `vgg54`).
    The defaults are the paper's networks (16 blocks, 64 channels, no bicubic skip).
    """

    patch: str  # "default" (the pipeline's params.yaml patch) | "seed" (`make paper`'s 64→256)
    crop_size: int  # HR crop side; LR side is crop_size / scale
    batch_size: int
    content: str | None = None
    scale: int = 4
    blocks: int = 16
    channels: int = 64
    d_channels: int = 64

    @property
    def name(self) -> str:
        return "srresnet" if self.content is None else f"srgan_{self.content}"

    @property
    def label(self) -> str:
        lr_side = self.crop_size // self.scale
        return f"{self.name} {lr_side}→{self.crop_size} b{self.batch_size}"

    @property
    def batches_per_step(self) -> int:
        # A GAN iteration takes d_steps (1) + 1 fresh batches, as srgan.training.jobs.train_gan does.
        return 1 if self.content is None else 2


WORKLOADS = tuple(
    Workload(patch, crop, batch, content)
    for content in (None, "mse", "vgg54")
    for patch, crop, batch in (("default", 96, 16), ("seed", 256, 8))
)


@dataclass
class Result:
    """Medians for one workload and variant; `ratio` is the paired median against the reference."""

    workload: str
    patch: str
    variant: str
    step_s: float
    steps_per_s: float
    images_per_s: float
    gflops: float  # achieved GFLOP/s (conv and matmul FLOPs per step / step time)
    ratio: float
    compile_s: float | None = None
    break_even_steps: float | None = None


def _batches(work: Workload) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random uint8 (lr (B, 3, c/s, c/s), hr (B, 3, c, c)) batches, one per batch a step takes.
    Pixel values do not change the arithmetic, so random images time the same as photos."""
    generator = torch.Generator().manual_seed(0)
    lr_side = work.crop_size // work.scale
    return [
        (
            torch.randint(0, 256, (work.batch_size, 3, lr_side, lr_side), dtype=torch.uint8, generator=generator),
            torch.randint(
                0, 256, (work.batch_size, 3, work.crop_size, work.crop_size), dtype=torch.uint8, generator=generator
            ),
        )
        for _ in range(work.batches_per_step)
    ]


def _models(work: Workload) -> tuple[Generator, Discriminator | None]:
    """Fresh G (and D for SRGAN) with the same initial weights for every variant."""
    torch.manual_seed(0)
    gen = Generator(work.scale, work.blocks, work.channels).train()
    disc = Discriminator(work.d_channels).train() if work.content is not None else None
    return gen, disc


def _plain_adam(model: nn.Module) -> torch.optim.Optimizer:
    # The textbook optimizer: one parameter at a time (neither foreach nor fused).
    return torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, betas=(0.9, 0.999), foreach=False, fused=False)


def _plain_float(img: torch.Tensor) -> torch.Tensor:
    # uint8 (N, 3, H, W) on the device -> float32 in [0, 1], contiguous NCHW
    return img.float() / 255


def _on(batches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> list[tuple[torch.Tensor, ...]]:
    """The uint8 batches on `device`, as a loader with pinned memory hands them over."""
    return [(lr_u8.to(device), hr_u8.to(device)) for lr_u8, hr_u8 in batches]


def reference_step(
    work: Workload, content_loss: nn.Module | None, subpixel_tail: bool = False, device: torch.device = CPU
) -> Step:
    """A textbook fp32 loop of the same model: what a first PyTorch implementation would run,
    with the paper's layer order unless `subpixel_tail`."""
    gen, disc = _models(work)
    gen.subpixel_tail = subpixel_tail
    gen = gen.to(device)
    disc = disc.to(device) if disc is not None else None
    opt_g = _plain_adam(gen)
    batches = _on(_batches(work), device)
    if disc is None:
        ((lr_u8, hr_u8),) = batches

        def step() -> None:
            sr_img = gen(_plain_float(lr_u8))
            loss = nn.functional.mse_loss(sr_img, _plain_float(hr_u8))
            opt_g.zero_grad()
            loss.backward()
            opt_g.step()

        return step

    assert content_loss is not None, "an SRGAN workload needs its content loss"
    opt_d = _plain_adam(disc)
    (lr_d, hr_d), (lr_g, hr_g) = batches

    def gan_step() -> None:
        with torch.no_grad():
            fake_img = gen(_plain_float(lr_d))
        d_real, d_fake = discriminator_loss(disc(_plain_float(hr_d)), disc(fake_img))
        opt_d.zero_grad()
        (d_real + d_fake).backward()
        opt_d.step()
        disc.requires_grad_(False)
        sr_img = gen(_plain_float(lr_g))
        loss = content_loss(sr_img, _plain_float(hr_g)) + ADV_WEIGHT * adversarial_loss(disc(sr_img))
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        disc.requires_grad_(True)

    return gan_step


def pipeline_step(
    work: Workload,
    content_loss: nn.Module | None,
    compile_mode: str | None = None,
    device: torch.device = CPU,
    cudnn_benchmark: bool = False,
) -> Step:
    """The pipeline's own step: srgan.training.steps' functions, set up as pretrain/train_gan do
    (the trained modules compiled when `compile_mode` is set, as `runtime.compile` does in
    `srgan.training.distributed.wrap`); cuDNN's benchmark mode on for this variant's steps only
    when `cudnn_benchmark`."""
    rt = Runtime(device, auto_precision(device))
    gen, disc = _models(work)
    gen = gen.to(device, memory_format=torch.channels_last)
    opt_g = adam(gen, LEARNING_RATE)
    batches = _on(_batches(work), device)

    def trained(module: nn.Module) -> nn.Module:
        # What `wrap` gives one process: the module, compiled under runtime.compile (here in `compile_mode`).
        return torch.compile(module, mode=compile_mode) if compile_mode is not None else module

    if compile_mode is not None:
        # A fresh Dynamo state: an earlier compile of Generator.forward at another shape would
        # otherwise make this one compile with dynamic shapes.
        torch._dynamo.reset()
    trained_gen = trained(gen)

    def benchmark_mode(step: Step) -> Step:
        def run() -> None:
            torch.backends.cudnn.benchmark = cudnn_benchmark
            step()

        return run

    if disc is None:
        ((lr_u8, hr_u8),) = batches

        def step() -> None:
            mse_step(trained_gen, opt_g, to_float(lr_u8, device), to_float(hr_u8, device), rt)

        return benchmark_mode(step)

    assert content_loss is not None, "an SRGAN workload needs its content loss"
    disc = disc.to(device, memory_format=torch.channels_last)
    trained_disc = trained(disc)
    opt_d = adam(disc, LEARNING_RATE)
    (lr_d, hr_d), (lr_g, hr_g) = batches
    # The paper's objective, as the reference computes it; channels_last as train_gan has it.
    loss = GeneratorLoss(content_loss, 0.0, ADV_WEIGHT).to(device, memory_format=torch.channels_last)

    def gan_step() -> None:
        discriminator_step(gen, trained_disc, opt_d, to_float(lr_d, device), to_float(hr_d, device), rt)
        generator_step(trained_gen, disc, opt_g, loss, to_float(lr_g, device), to_float(hr_g, device), rt)

    return benchmark_mode(gan_step)


def _timed(step: Step, device: torch.device = CPU) -> float:
    """Seconds of one step, to the end of its work on the device (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure(
    work: Workload,
    content_loss: nn.Module | None,
    reps: int,
    compile_modes: Sequence[str] = (),
    device: torch.device = CPU,
) -> list[Result]:
    """Reference, pipeline and (for SRResNet) compiled-pipeline variants of `work`, interleaved.

    Each variant first runs one untimed warm-up step (optimizer state, oneDNN primitives, and the
    compile for `+compile`); the reference's warm-up also counts the step's FLOPs. Then each
    repetition runs one step of every variant, in alternating order so no variant always
    follows the same neighbour.
    """
    variants: dict[str, Step] = {
        REFERENCE: reference_step(work, content_loss, device=device),
        CANDIDATE: pipeline_step(work, content_loss, device=device),
    }
    if device.type == "cuda":
        variants[CUDNN_BENCHMARK] = pipeline_step(work, content_loss, device=device, cudnn_benchmark=True)
    if work.content is None:
        variants[REFERENCE_SUBPIXEL] = reference_step(work, None, subpixel_tail=True, device=device)
    compiled = [_compile_name(mode) for mode in compile_modes]
    for name, mode in zip(compiled, compile_modes):
        variants[name] = pipeline_step(work, content_loss, compile_mode=mode, device=device)
    torch.backends.cudnn.benchmark = False  # the reference's, as every variant but CUDNN_BENCHMARK
    with FlopCounterMode(display=False) as counter:
        variants[REFERENCE]()
    flops = counter.get_total_flops()
    for name in variants.keys() - {REFERENCE, *compiled}:
        _timed(variants[name], device)
    compile_step_s: dict[str, float] = {}
    for name in compiled:
        # An empty Inductor cache on disk and in memory for each mode: otherwise a later mode
        # reuses the kernels an earlier one built, and its compile time looks cheaper than a
        # first `dvc repro` would find it.
        with fresh_cache():
            compile_step_s[name] = _timed(variants[name], device)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(reps):
        order = list(variants) if rep % 2 == 0 else list(reversed(variants))
        for name in order:
            times[name].append(_timed(variants[name], device))
    images = work.batch_size * work.batches_per_step
    results = []
    for name, samples in times.items():
        step_s = statistics.median(samples)
        ratio = statistics.median(ref / own for ref, own in zip(times[REFERENCE], samples))
        result = Result(work.name, work.patch, name, step_s, 1 / step_s, images / step_s, flops / step_s / 1e9, ratio)
        if name in compile_step_s:
            result.compile_s = compile_step_s[name] - step_s
            saved_per_step = statistics.median(times[CANDIDATE]) - step_s
            result.break_even_steps = result.compile_s / saved_per_step if saved_per_step > 0 else None
        results.append(result)
    return results


def _compile_name(mode: str) -> str:
    return f"{CANDIDATE}+compile" if mode == "default" else f"{CANDIDATE}+compile({mode})"


def content_losses(workloads: Sequence[Workload], device: torch.device = CPU) -> dict[str, ContentLoss]:
    """One ContentLoss per content kind, built the way train_gan builds it by default (VGG kinds on
    the packaged Oxford weights)."""
    kinds = {work.content for work in workloads if work.content is not None}
    return {kind: ContentLoss(kind).to(device) for kind in kinds}


def checkpoint_seconds(device: torch.device, folder: str) -> tuple[float, float]:
    """Seconds to write the SRGAN stage's checkpoint at the paper's size (16 blocks × 64 channels,
    a 64-wide discriminator, both Adam states after one update) to `folder`, and its size in MB:
    what every `checkpoint_every` costs a run."""
    gen, disc = Generator(4, 16, 64).to(device), Discriminator(64).to(device)
    optimizers = {"opt_g": adam(gen, LEARNING_RATE), "opt_d": adam(disc, LEARNING_RATE)}
    for model, opt in zip((gen, disc), optimizers.values()):
        sum(p.sum() for p in model.parameters()).backward()
        opt.step()  # creates the Adam moments a real checkpoint holds
    path = Path(folder) / "last.pt"
    started = time.perf_counter()
    save({"generator": gen, "discriminator": disc}, optimizers, path, LoopState(step=1), [])
    return time.perf_counter() - started, path.stat().st_size / 1e6


def _load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def report_json(results: Sequence[Result], meta: dict[str, object]) -> dict[str, object]:
    """The one-line JSON: run facts, `srresnet_speedup` (pipeline vs plain, default patch), every row."""
    speedup = next(
        r.ratio for r in results if r.workload == "srresnet" and r.patch == "default" and r.variant == CANDIDATE
    )
    return {**meta, "srresnet_speedup": round(speedup, 3), "results": [asdict(r) for r in results]}


def format_table(results: Sequence[Result], workloads: Sequence[Workload]) -> str:
    """Human-readable rows: medians per variant, the ratio against the plain loop, compile cost."""
    labels = {(w.name, w.patch): w.label for w in workloads}
    width = max(len(r.variant) for r in results)
    lines = [f"{'workload':<28} {'variant':<{width}} {'step s':>8} {'img/s':>8} {'GFLOP/s':>8} {'× plain':>8}"]
    for r in results:
        line = (
            f"{labels[(r.workload, r.patch)]:<28} {r.variant:<{width}} {r.step_s:>8.3f} {r.images_per_s:>8.2f} "
            f"{r.gflops:>8.1f} {r.ratio:>8.2f}"
        )
        if r.compile_s is not None:
            pays = f"after {r.break_even_steps:.0f} steps" if r.break_even_steps is not None else "never (no faster)"
            line += f"   compile {r.compile_s:.1f} s, pays off {pays}"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reps", type=int, default=5, help="timed repetitions per variant (the acceptance figure uses >= 5)"
    )
    parser.add_argument(
        "--compile-modes",
        default="default,max-autotune-no-cudagraphs",
        help="comma-separated torch.compile modes for the SRResNet step at the default patch; empty: none",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to train (default cpu)")
    parser.add_argument("--checkpoint", action="store_true", help="also time writing an SRGAN checkpoint")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line, last")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    modes = [mode for mode in args.compile_modes.split(",") if mode]
    started = time.perf_counter()
    load_start = _load_average()
    results: list[Result] = []
    losses = content_losses(WORKLOADS, device)
    for work in WORKLOADS:
        print(f"measuring {work.label} ...", file=sys.stderr, flush=True)
        # Compiling costs minutes on a CPU: there, only the SRResNet step at the default patch.
        compiles = device.type == "cuda" or (work.content is None and work.patch == "default")
        results += measure(
            work, losses[work.content] if work.content else None, args.reps, modes if compiles else (), device
        )
    meta = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "precision": auto_precision(device),
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "reps": args.reps,
        "load_average_start": load_start,
        "load_average_end": _load_average(),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    print(
        f"{meta['device']} ({meta['precision']}), {meta['cpu']}, {meta['threads']} threads, torch {meta['torch']}, "
        f"{args.reps} reps (medians); load average "
        f"{' '.join(map(str, load_start))} at start, {' '.join(map(str, meta['load_average_end']))} at end; "
        f"{meta['elapsed_s']} s"
    )
    print(format_table(results, WORKLOADS))
    if args.checkpoint:
        with tempfile.TemporaryDirectory() as folder:
            seconds, megabytes = checkpoint_seconds(device, folder)
        meta["checkpoint_s"], meta["checkpoint_mb"] = round(seconds, 2), round(megabytes, 1)
        print(f"SRGAN checkpoint (paper's model, G + D + Adam states): {megabytes:.0f} MB written in {seconds:.2f} s")
    if args.json:
        print(json.dumps(report_json(results, meta)))


if __name__ == "__main__":
    main()
