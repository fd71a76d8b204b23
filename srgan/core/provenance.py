"""What a run records about where its inputs and outputs came from: the git commit, a file's
sha256, and DVC's md5 of a pipeline out. No MLflow here: `tracking` turns these into tags."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import yaml

LOCK_FILE = "dvc.lock"


def git_commit(root: Path) -> str:
    """HEAD's commit in `root`, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def dvc_md5(out: Path) -> str | None:
    """DVC's md5 of a stage out (`<md5>.dir` for a folder) as `dvc.lock` in the working directory
    records it, or None when no stage there has written `out` yet (a stage run by hand).

    DVC runs each stage from the repository root and writes a stage's lock entry when the stage
    completes, so a later stage reads the md5 of the out it depends on."""
    lock = Path(LOCK_FILE)
    if not lock.is_file():
        return None
    wanted = os.path.normpath(out)
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for stage in stages.values():
        for entry in stage.get("outs", []):
            if os.path.normpath(entry.get("path", "")) == wanted and "md5" in entry:
                return str(entry["md5"])
    return None


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dataset_digest(prepared: Path) -> str:
    """What tells two versions of the prepared data apart: DVC's md5 of the folder, or, for a
    stage run outside DVC, `manifest:` and the start of the sha256 of its manifest.json."""
    return dvc_md5(prepared) or f"manifest:{file_sha256(prepared / 'manifest.json')[:16]}"
