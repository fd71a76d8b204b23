"""Device and precision by what the GPU can do, with only torch's device queries replaced where
this machine has no GPU: bf16 from compute capability 8.0, a GPU the build has no kernels for
named, `runtime.device=cuda` refused with torch's own reason, SyncBatchNorm only for several
CUDA processes."""

from __future__ import annotations

import pytest
import torch

from srgan.core.config import RuntimeParams
from srgan.core.errors import SrganError
from srgan.core.runtime import Runtime, auto_precision, cuda_problem, resolve_device, resolve_runtime
from srgan.models.networks import Discriminator
from srgan.training.distributed import sync_batchnorm

CUDA_USABLE = not cuda_problem()
BUILT_FOR = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]  # torch 2.14.1+cu130's list


@pytest.mark.parametrize(
    ("capability", "precision"), [((7, 0), "fp32"), ((7, 5), "fp32"), ((8, 0), "bf16"), ((9, 0), "bf16")]
)
def test_auto_precision_is_bf16_from_compute_capability_8(
    monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int], precision: str
) -> None:
    """V100 (7.0) and T4 (7.5) emulate bf16; A100 (8.0) and H100 (9.0) compute it natively."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert auto_precision(torch.device("cuda")) == precision


def fake_gpu(monkeypatch: pytest.MonkeyPatch, name: str, capability: tuple[int, int], built: list[str]) -> None:
    """torch's answers about a present GPU (the queries only; nothing runs on it)."""
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: built)


@pytest.mark.parametrize(
    ("name", "capability", "built"),
    [
        ("Tesla V100-SXM2-16GB", (7, 0), BUILT_FOR),  # older than the build's oldest kernels
        ("Tesla P100-PCIE-16GB", (6, 0), BUILT_FOR),
        ("NVIDIA A100-SXM4-80GB", (8, 0), ["sm_90", "compute_90"]),  # only newer kernels and PTX
    ],
)
def test_a_gpu_the_build_has_no_kernels_for_is_named_and_cuda_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, capability: tuple[int, int], built: list[str]
) -> None:
    fake_gpu(monkeypatch, name, capability, built)
    sm = f"sm_{capability[0]}{capability[1]}"
    assert cuda_problem() == (
        f"{name} ({sm}) is not among the GPU architectures this torch {torch.__version__} was built for "
        f"({', '.join(built)})"
    )
    with pytest.raises(SrganError) as refused:
        resolve_device("cuda")
    assert str(refused.value) == (
        f"runtime.device=cuda, but CUDA is not usable here: {cuda_problem()}; use runtime.device=auto or cpu"
    )
    device, because = resolve_device("auto")  # auto settles for the CPU, and keeps the reason
    assert device == torch.device("cpu") and sm in because


@pytest.mark.skipif(CUDA_USABLE, reason="the real kernel would run on this machine's GPU")
def test_a_gpu_runs_kernels_of_its_major_architecture_and_ptx_of_older_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    """An sm_89 card (L4) runs the sm_86 kernels; an sm_120 card runs compute_90 PTX. The queries
    pass, and the check goes on to one real kernel (which fails here, there being no GPU)."""
    for capability, built in (((8, 9), ["sm_80", "sm_86"]), ((12, 0), ["sm_90", "compute_90"])):
        fake_gpu(monkeypatch, "a GPU", capability, built)
        problem = cuda_problem()
        assert problem and "not among the GPU architectures" not in problem


@pytest.mark.skipif(CUDA_USABLE, reason="this machine has a usable GPU")
def test_without_a_usable_gpu_cuda_is_refused_in_torchs_words_and_auto_runs_on_the_cpu() -> None:
    problem = cuda_problem()
    assert problem and "\n" not in problem
    with pytest.raises(SrganError, match=r"^runtime\.device=cuda, but CUDA is not usable here: "):
        resolve_runtime(RuntimeParams(device="cuda"))
    rt = resolve_runtime(RuntimeParams(device="auto", threads=1))
    assert rt.device.type == "cpu" and rt.cpu_because == problem
    assert resolve_runtime(RuntimeParams(device="cpu", threads=1)).cpu_because == ""  # asked for: no reason


def test_syncbatchnorm_only_for_several_cuda_processes() -> None:
    """SyncBatchNorm keeps the parameters and buffers (checkpoints unchanged); one process, or
    CPU processes (which PyTorch's SyncBatchNorm does not run on), keep BatchNorm."""

    def norms(module: torch.nn.Module) -> set[str]:
        return {type(m).__name__ for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}

    names = set(Discriminator(channels=4, norm="batch").state_dict())
    for device, world_size, expected in (
        ("cuda", 2, "SyncBatchNorm"),
        ("cuda", 1, "BatchNorm2d"),
        ("cpu", 2, "BatchNorm2d"),
    ):
        rt = Runtime(torch.device(device), "fp32", world_size=world_size)
        converted = sync_batchnorm(Discriminator(channels=4, norm="batch"), rt)
        assert norms(converted) == {expected}
        assert set(converted.state_dict()) == names
