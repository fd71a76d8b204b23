"""A stage started by a Python without the project (DVC runs whatever `python` is first on PATH)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_a_stage_under_another_python_says_which_environment_to_use(tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(other)], check=True, timeout=120)
    python = other / "bin" / "python"
    result = subprocess.run(
        [
            str(python),
            "-m",
            "stages.pretrain",
            "--data",
            "data/prepared",
            "--out",
            str(tmp_path / "g.pt"),
            "--curves",
            str(tmp_path / "c.csv"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"error: {python} is not the project's environment (srgan is not installed in it); activate it with "
        "`source .venv/bin/activate` (`make repro` creates .venv), then run dvc again\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]
