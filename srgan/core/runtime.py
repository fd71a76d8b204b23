"""Resolve where and how to compute: device, precision, CPU threads, seeding, and the project root.

`auto` means CUDA when present, and bf16 autocast where the hardware runs it fast (CUDA, and
CPUs with AVX-512 BF16 or AMX); fp32 elsewhere, where bf16 would be emulated and slow. On the
CPU, `auto` threads are an equal part of the cores among the srgan processes running
(`srgan.core.threads`).
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from srgan.core import threads
from srgan.core.config import RuntimeParams
from srgan.core.errors import SrganError


def project_root() -> Path:
    """`$DVC_ROOT` when DVC runs the stage, else the working directory (never the package path),
    so `dvc exp run --temp/--queue` copies still find the same MLflow store and caches."""
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_has_fast_bf16() -> bool:
    """AVX-512 BF16 or AMX-BF16: the CPU features that make bf16 matmuls faster than fp32."""
    return bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class Runtime:
    """The resolved runtime: what `runtime.*` params turned into on this machine."""

    device: torch.device
    precision: str  # "fp32" | "bf16"
    world_size: int = 1
    rank: int = 0
    share: threads.Share | None = None  # this process's part of the CPU cores; None on CUDA

    def rebalance(self) -> None:
        """Resize the CPU thread pool to this process's part of the cores now (`auto`)."""
        if self.share is not None:
            self.share.rebalance()

    def autocast(self) -> contextlib.AbstractContextManager[object]:
        """bf16 autocast on this device, or nothing for fp32."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def describe(self) -> dict[str, str | int]:
        """The runtime as MLflow params and report lines: device, precision, versions, hardware."""
        hardware = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else cpu_name()
        return {
            "runtime.resolved_device": self.device.type,
            "runtime.resolved_precision": self.precision,
            "runtime.torch_version": torch.__version__,
            "runtime.hardware": hardware,
            "runtime.world_size": self.world_size,
        }


def resolve_runtime(params: RuntimeParams) -> Runtime:
    """Turn `auto` settings into a concrete device and precision; refuse impossible requests."""
    if params.device == "cuda" and not torch.cuda.is_available():
        raise SrganError("runtime.device=cuda but no CUDA device is available; use runtime.device=auto or cpu")
    device_type = (
        "cuda" if params.device == "cuda" or (params.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    device = torch.device(device_type)
    if params.precision == "auto":
        precision = "bf16" if device_type == "cuda" or cpu_has_fast_bf16() else "fp32"
    else:
        precision = params.precision
    share = threads.claim(params.threads) if device_type == "cpu" else None
    return Runtime(device=device, precision=precision, share=share)


def seed_everything(seed: int) -> None:
    """Seed every generator a stage might touch; data order uses its own per-step generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
