"""Two srgan jobs on one machine: each one's speed beside the other, as a share of its solo speed.

Workloads, each a child process running the library's own code the way the commands do:
- `train`: the pretrain stage's update (`srgan.training.steps.mse_step`, the paper's 16-block
  generator, batch 16 of 24→96 patches, fused Adam), with `rt.rebalance()` before each step as
  `run_loop` calls it;
- `upscale`: `srgan upscale`'s `upscale_image` on a 256×256 photo (1024×1024 out), tile by tile.

Each child claims its share through `resolve_runtime` (`runtime.threads`), warms up, and then
counts the iterations it finishes in a common window that starts at the same instant for both
children of a pair. Rows: each workload alone; then `train + upscale` and `train + train`, once
with `threads: auto` (the default) and once with every process fixed at all the cores (what
torch does by itself, and what this project did before `runtime.threads`). Each ratio is a job's
rate in the pair over its solo rate measured in the same run (alone, both settings give all cores). The
target is at least 0.40 for both jobs of each pair at `auto`.

    .venv/bin/python benchmarks/concurrency.py [--seconds 30] [--json]

Nothing else may run on the machine meanwhile: that is the point of the measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import torch

from srgan.core.config import RuntimeParams
from srgan.core.runtime import Runtime, cpu_name, resolve_runtime
from srgan.core.threads import cores
from srgan.inference.tiling import upscale_image
from srgan.models.networks import Generator
from srgan.training.steps import adam, mse_step

WORKLOADS = ("train", "upscale")


def _iteration(workload: str, rt: Runtime) -> Callable[[], object]:
    """One unit of the workload's work, built once: a training step or one upscaled image."""
    torch.manual_seed(0)
    gen = Generator(scale=4, blocks=16, channels=64).to(memory_format=torch.channels_last)
    if workload == "train":
        opt = adam(gen, 1e-4)
        lr_img = torch.rand(16, 3, 24, 24).contiguous(memory_format=torch.channels_last)  # [0, 1] RGB
        hr_img = torch.rand(16, 3, 96, 96).contiguous(memory_format=torch.channels_last)

        def step() -> None:
            rt.rebalance()
            mse_step(gen.train(), opt, lr_img, hr_img, rt)

        return step
    photo = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)  # (H, W, 3) RGB
    return lambda: upscale_image(gen, photo, rt)


def child(workload: str, setting: str, start_at: float, seconds: float) -> None:
    """Run `workload` from `start_at` (epoch seconds) for `seconds`; print its rate as JSON."""
    rt = resolve_runtime(
        RuntimeParams(device="cpu", precision="fp32", threads=setting if setting == "auto" else int(setting))
    )
    iteration = _iteration(workload, rt)
    iteration()  # warm-up: allocator, kernels, and the first rebalance
    time.sleep(max(0.0, start_at - time.time()))
    begin = time.perf_counter()
    done = 0
    while time.perf_counter() - begin < seconds:
        iteration()
        done += 1
    elapsed = time.perf_counter() - begin
    print(json.dumps({"workload": workload, "rate": done / elapsed, "threads": torch.get_num_threads()}))


def run(workloads: list[str], setting: str, seconds: float) -> list[dict[str, float]]:
    """Start one child per workload, all counting from the same instant; their results in order."""
    start_at = time.time() + 15  # after every child's imports, model build and warm-up
    children = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", w, setting, str(start_at), str(seconds)], stdout=subprocess.PIPE
        )
        for w in workloads
    ]
    results = []
    for proc in children:
        out, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"a {setting} child failed (exit {proc.returncode})")
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each measured window")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.add_argument("--child", nargs=4, metavar=("WORKLOAD", "SETTING", "START_AT", "SECONDS"), help="internal")
    args = parser.parse_args()
    if args.child:
        workload, setting, start_at, seconds = args.child
        child(workload, setting, float(start_at), float(seconds))
        return
    print(f"{cpu_name()}, {cores()} cores, torch {torch.__version__}, fp32; load average {os.getloadavg()}")
    # Alone, auto and fixed at all the cores are the same setting: one solo run serves both.
    solo = {w: run([w], "auto", args.seconds)[0]["rate"] for w in WORKLOADS}
    print(f"alone: train {solo['train']:.3f} steps/s, upscale {solo['upscale']:.3f} images/s")
    figures: dict[str, dict[str, float]] = {"solo": solo}
    for setting in ("auto", str(cores())):
        label = "auto" if setting == "auto" else f"fixed {setting}"
        for pair in (["train", "upscale"], ["train", "train"]):
            results = run(pair, setting, args.seconds)
            ratios = [r["rate"] / solo[r["workload"]] for r in results]
            name = " + ".join(pair)
            figures[f"{label}: {name}"] = {f"{r['workload']}#{i}": x for i, (r, x) in enumerate(zip(results, ratios))}
            shown = ", ".join(
                f"{r['workload']} {ratio:.2f} of solo ({r['threads']} threads)" for r, ratio in zip(results, ratios)
            )
            verdict = "PASS" if min(ratios) >= 0.40 else "below 0.40"
            print(f"[{label}] {name}: {shown}  {verdict if setting == 'auto' else ''}".rstrip())
    print(f"load average at the end {os.getloadavg()}")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
