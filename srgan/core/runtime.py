"""Resolve where and how to compute: device, precision, CPU threads, seeding, and the project root.

`auto` means CUDA when a usable device is present, and bf16 autocast where the hardware runs it
natively (CUDA compute capability 8.0 and up, and CPUs with AVX-512 BF16 or AMX); fp32 elsewhere,
where bf16 would be emulated and slow (a T4's or V100's bf16). "Usable" is checked as torch would
meet it on the first kernel: a driver, this build's GPU architectures, one real kernel. On the CPU,
`auto` threads are an equal part of the cores among the srgan processes running
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


# Compute capability from which CUDA GPUs run bf16 natively (Ampere); older ones emulate it.
BF16_CAPABILITY = (8, 0)


def cuda_problem() -> str:
    """Why this process cannot compute on CUDA, in torch's own words, or "" when it can.

    Checked in the order a run would fail: no CUDA in this torch build, no driver or one too old
    for the build's CUDA (`torch.cuda.init` says which), the GPU's architecture missing from the
    build's kernel list (it would fail at the first kernel: "no kernel image is available"), and
    finally one real kernel, which catches whatever the three queries miss."""
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU-only build"
    if not torch.cuda.is_available():
        try:
            torch.cuda.init()
        except (RuntimeError, AssertionError) as err:  # torch's words for the driver's reason
            return _first_line(err)
        return f"no CUDA device found (torch {torch.__version__}, built for CUDA {torch.version.cuda})"
    major, minor = torch.cuda.get_device_capability()
    built = torch.cuda.get_arch_list()
    # A device runs kernels built for its own major architecture at a minor version up to its own,
    # or PTX (compute_XY) for any architecture up to its own, compiled at load.
    runs = [a for a in built if a.startswith("sm_") and _arch(a)[0] == major and _arch(a) <= (major, minor)]
    ptx = [a for a in built if a.startswith("compute_") and _arch(a) <= (major, minor)]
    if not runs and not ptx:
        return (
            f"{torch.cuda.get_device_name()} (sm_{major}{minor}) is not among the GPU architectures this torch "
            f"{torch.__version__} was built for ({', '.join(built)})"
        )
    try:
        (torch.ones(1, device="cuda") * 2).item()
    except RuntimeError as err:  # e.g. "CUDA error: no kernel image is available for execution on the device"
        return _first_line(err)
    return ""


def _arch(name: str) -> tuple[int, int]:
    """ "sm_86" / "compute_90" → (8, 6) / (9, 0); "sm_100" → (10, 0)."""
    digits = name.split("_", 1)[1].rstrip("a")
    return int(digits[:-1]), int(digits[-1])


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def auto_precision(device: torch.device) -> str:
    """bf16 where the device computes it natively, else fp32: CUDA by compute capability (8.0 and
    up), the CPU by its instruction set."""
    if device.type == "cuda":
        return "bf16" if torch.cuda.get_device_capability(device) >= BF16_CAPABILITY else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


@dataclass(frozen=True)
class Runtime:
    """The resolved runtime: what `runtime.*` params turned into on this machine. `cpu_because` is
    why `device: auto` did not find a usable CUDA device ("" when asked for the CPU, or on CUDA);
    `compile` asks the training stages for `torch.compile` of their trained modules."""

    device: torch.device
    precision: str  # "fp32" | "bf16"
    world_size: int = 1
    rank: int = 0
    share: threads.Share | None = None  # this process's part of the CPU cores; None on CUDA
    cpu_because: str = ""
    compile: bool = False

    def synchronize(self) -> None:
        """Wait for the device's queued work (CUDA runs asynchronously), so a clock reads its end."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

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


def resolve_device(asked: str) -> tuple[torch.device, str]:
    """The device `runtime.device` asks for, and why `auto` settled for the CPU ("" otherwise).
    `cuda` where CUDA is not usable is refused in one line with torch's reason."""
    problem = cuda_problem() if asked in ("auto", "cuda") else ""
    if asked == "cuda" and problem:
        raise SrganError(f"runtime.device=cuda, but CUDA is not usable here: {problem}; use runtime.device=auto or cpu")
    if asked == "cpu" or problem:
        return torch.device("cpu"), problem
    return torch.device("cuda"), ""


def resolve_runtime(params: RuntimeParams) -> Runtime:
    """Turn `auto` settings into a concrete device and precision; refuse impossible requests."""
    device, cpu_because = resolve_device(params.device)
    precision = auto_precision(device) if params.precision == "auto" else params.precision
    share = threads.claim(params.threads) if device.type == "cpu" else None
    return Runtime(device=device, precision=precision, share=share, cpu_because=cpu_because, compile=params.compile)


def seed_everything(seed: int) -> None:
    """Seed every generator a stage might touch; data order uses its own per-step generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
