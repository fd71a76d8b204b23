"""Data-parallel training with PyTorch's own engines: torchrun launches, DDP averages gradients.

A training stage with `runtime.nproc` > 1 re-executes itself under `torchrun --standalone` with
that many processes (one machine). Several machines run `torchrun` themselves with rendezvous
flags (docs/scaling.md, torchrun); the stage then finds `WORLD_SIZE` set and does not relaunch.
Backends: nccl on CUDA (one GPU per process, `LOCAL_RANK`), gloo on CPU.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import sys
import threading
import time

import torch
import torch.distributed as dist

from srgan.core.errors import SrganError
from srgan.core.runtime import Runtime
from srgan.tracking.remote import patience_s

# Beyond the tracking store's patience: while rank 0 waits out a store that is away, the other
# ranks wait in their next collective, and must not be timed out first (NCCL's default: 10 min,
# the patience's default too).
GROUP_TIMEOUT_MARGIN_S = 300


def under_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def relaunch(nproc: int, module: str) -> None:
    """Replace this process with `torchrun --standalone --nproc-per-node=nproc -m module argv…`
    when `nproc` > 1 and torchrun has not launched it already; otherwise return."""
    if nproc == 1 or under_torchrun():
        return
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        module,
        *sys.argv[1:],
    ]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)


def setup(rt: Runtime, batch_sizes: dict[str, int]) -> Runtime:
    """Join the process group when launched by torchrun; returns `rt` with rank and world size
    (and, on CUDA, this process's GPU). `batch_sizes` (param key → global batch) must split
    evenly across the processes."""
    if not under_torchrun():
        return rt
    world_size = int(os.environ["WORLD_SIZE"])
    for key, size in batch_sizes.items():
        if size % world_size:
            raise SrganError(f"{key}={size} does not split over {world_size} processes; use a multiple of {world_size}")
    device = rt.device
    if device.type == "cuda":
        local_rank = int(os.environ["LOCAL_RANK"])
        if local_rank >= torch.cuda.device_count():
            raise SrganError(
                f"{os.environ.get('LOCAL_WORLD_SIZE', world_size)} processes on this machine but only "
                f"{torch.cuda.device_count()} GPU(s); lower runtime.nproc (or --nproc-per-node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        _exit_with_launcher()
        timeout = datetime.timedelta(seconds=patience_s() + GROUP_TIMEOUT_MARGIN_S)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return dataclasses.replace(rt, device=device, world_size=world_size, rank=dist.get_rank())


def _exit_with_launcher() -> None:
    """End this process when the torchrun that launched it dies.

    torchrun starts each worker in a session of its own, so when torchrun itself is SIGKILLed (a
    crash, an OOM kill, a killed `dvc repro`) nothing stops the workers: they would train on and
    write outs behind the back of the next run. Killed this way, a worker loses at most the steps
    since its last checkpoint, like a single process.
    """
    launcher = os.getppid()

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(0.5)
        os._exit(137)  # as if SIGKILLed with its launcher

    threading.Thread(target=watch, name="exit-with-torchrun", daemon=True).start()


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def mean_over_ranks(values: torch.Tensor, rt: Runtime) -> torch.Tensor:
    """Element-wise mean of `values` over all processes (itself in a single process)."""
    if rt.world_size == 1:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / rt.world_size


def lead_says(flag: bool, rt: Runtime) -> bool:
    """Rank 0's `flag` on every process: one decision for all, where each deciding for itself
    would race (a file one rank deletes while another looks for it)."""
    if rt.world_size == 1:
        return flag
    value = torch.tensor([int(flag)], device=rt.device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def identical_parameters(modules: list[torch.nn.Module], rt: Runtime) -> bool:
    """Whether every process holds bit-identical parameters in `modules` (True in one process).

    DDP keeps them so by averaging every gradient; a parameter that trains outside its wrapper
    would drift apart on each rank unnoticed, and only rank 0's copy is written. (BatchNorm's
    running statistics are buffers, not parameters: each rank's follow its own batches between
    DDP's broadcasts, and rank 0's are the ones written.)"""
    return agree(torch.cat([p.detach().float().flatten() for m in modules for p in m.parameters()]), rt)


def agree(values: torch.Tensor, rt: Runtime) -> bool:
    """Whether every process holds the same `values`, element for element (True in a single
    process): their minimum and maximum over the processes are equal."""
    if rt.world_size == 1:
        return True
    low, high = (values.to(rt.device, copy=True) for _ in range(2))
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    return bool(torch.equal(low, high))


def sync_batchnorm(module: torch.nn.Module, rt: Runtime) -> torch.nn.Module:
    """`module` with its BatchNorms normalising over the whole global batch when several CUDA
    processes share it (the paper's batch of 8 over 8 GPUs would otherwise normalise single
    images); `module` as it is otherwise. SyncBatchNorm has the same parameters and buffers, so
    checkpoints do not change; PyTorch implements it for GPUs only."""
    if rt.world_size == 1 or rt.device.type != "cuda":
        return module
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)


def wrap(module: torch.nn.Module, rt: Runtime) -> torch.nn.Module:
    """DistributedDataParallel around `module` in a process group, else `module` itself, then
    `torch.compile` of that when `runtime.compile` asks.

    Call the wrapper for forward passes whose gradients train `module`; use `module` for
    anything else (no-grad passes, a frozen discriminator, validation, checkpoints).
    """
    wrapped = module
    if rt.world_size > 1:
        device_ids = [rt.device.index] if rt.device.type == "cuda" else None
        wrapped = torch.nn.parallel.DistributedDataParallel(module, device_ids=device_ids)
    return torch.compile(wrapped) if rt.compile else wrapped
