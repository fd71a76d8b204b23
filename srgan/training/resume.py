"""A training run's checkpoint: where it lives, what it holds, and how an execution resumes from it.

`.cache/<stage>/<hash>/last.pt` (`checkpoint_path`) holds the modules, the optimizers, the loop's
state and the curve points the tracking store had not taken; `finished` beside it marks a run
that wrote its outs.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from srgan.core.config import Params, flatten
from srgan.core.errors import SrganError
from srgan.core.runtime import Runtime, project_root
from srgan.models import checkpoint
from srgan.training import distributed
from srgan.training.loop import LoopState


def checkpoint_path(stage: str, params: Params, rt: Runtime, sections: tuple[str, ...], inputs: list[Path]) -> Path:
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


def resume(
    name: str,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    path: Path,
    rt: Runtime,
) -> LoopState:
    """Stage `name`'s `modules` and `optimizers` loaded from its checkpoint, if one exists, and the loop's
    state; every process must find the same one.

    A checkpoint of a finished run (all its steps done and the outs written: `finished_mark`) is not
    resumed: DVC runs a stage whose outs it already has only when asked to (`dvc repro -f`), and
    then the stage trains again. One that stopped after its last step, before its outs were
    written and logged (the tracking store away), resumes there and only finishes."""
    state = LoopState()
    # Rank 0 alone looks at the mark and removes it: ranks that each looked would race, one
    # deleting it while another still checks for it and resumes the finished run instead.
    lead = rt.rank == 0
    if distributed.lead_says(lead and finished_mark(path).exists(), rt):
        if lead:
            print(f"{name}: {path} holds a finished run; training again from step 0", file=sys.stderr)
            finished_mark(path).unlink()
        saved = None
    else:
        saved = checkpoint.load(path, checkpoint.TRAINING_FORMAT) if path.exists() else None
    if saved is not None:
        for key, module in modules.items():
            module.load_state_dict(saved[key])
        for key, opt in optimizers.items():
            opt.load_state_dict(saved[key])
        state = LoopState(
            saved["step"], saved["curves"], saved["validation"], saved.get("mlflow_run_id", ""), saved.get("unsent", [])
        )
        print(f"{name}: resuming from step {state.step} ({path})", file=sys.stderr)
    if not distributed.agree(torch.tensor([state.step]), rt):
        raise SrganError(
            f"{name}: the processes found different checkpoints at {path} (rank {rt.rank} "
            f"starts at step {state.step}); across machines, put the project's .cache on a shared filesystem, "
            "or delete it to start afresh"
        )
    return state


def finished_mark(path: Path) -> Path:
    """The mark beside a checkpoint that its run wrote its outs: the next execution trains anew."""
    return path.with_name("finished")


def save(
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    path: Path,
    state: LoopState,
    unsent: list[dict[str, Any]],
) -> None:
    """The checkpoint: weights, optimizers, the loop's state, and the tracker's `unsent` items."""
    payload: dict[str, Any] = {
        "format": checkpoint.TRAINING_FORMAT,
        "step": state.step,
        "curves": state.curves,
        "validation": state.validation,
        "mlflow_run_id": state.run_id,
        "unsent": unsent,
    }
    payload.update({name: checkpoint.cpu_state_dict(m) for name, m in modules.items()})
    payload.update({name: opt.state_dict() for name, opt in optimizers.items()})
    checkpoint.save(path, payload)
