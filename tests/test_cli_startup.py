"""`srgan` starts fast: its module imports no heavy package, and each command imports only what
it uses (MLflow only for a model URI). Times are in docs/speed.md; these tests check the imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from srgan.models.checkpoint import generator_config, save_generator
from srgan.models.networks import build_generator

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("mlflow", "torch", "torchvision", "pandas")


def imported_after(code: str, cwd: Path) -> set[str]:
    """Which of the heavy packages a fresh interpreter has imported after running `code`."""
    check = f"{code}\nimport sys\nprint('imported:', *(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", check], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.splitlines()[-1].split()[1:])


def test_the_command_line_module_imports_no_heavy_package(tmp_path: Path) -> None:
    assert imported_after("import srgan.cli", tmp_path) == set()
    help_code = "from srgan.cli import main\ntry:\n    main(['upscale', '--help'])\nexcept SystemExit:\n    pass"
    assert imported_after(help_code, tmp_path) == set()


def test_upscale_imports_torch_but_not_mlflow_torchvision_or_pandas(tmp_path: Path) -> None:
    config = generator_config(4, 1, 8, True)
    torch.manual_seed(0)
    save_generator(tmp_path / "gen.pt", build_generator(config).eval(), config)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "in.png")
    code = "from srgan.cli import main\nmain(['upscale', 'in.png', '-o', 'out.png', '--model', 'gen.pt'])"
    assert imported_after(code, tmp_path) == {"torch"}
    assert Image.open(tmp_path / "out.png").size == (64, 64)
