"""dvc.yaml's code deps are exactly the modules each stage imports, so a code change re-runs
every stage it can affect, and nothing else."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((REPO / "dvc.yaml").read_text())


def project_imports(module: Path) -> set[str]:
    """Repository-relative paths of the `srgan` modules that `module` imports directly."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "srgan":
            names = [f"{node.module}.{alias.name}" for alias in node.names] if node.module == "srgan" else [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.startswith("srgan.")]
        else:
            continue
        found |= {name.replace(".", "/") + ".py" for name in names if (REPO / (name.replace(".", "/") + ".py")).is_file()}
    return found


def import_closure(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += project_imports(REPO / path)
    return seen


@pytest.mark.parametrize("stage", list(SPEC["stages"]))
def test_code_deps_are_the_stage_modules_import_closure(stage: str) -> None:
    code_deps = {dep for dep in SPEC["stages"][stage]["deps"] if dep.endswith(".py")}
    assert code_deps == import_closure(f"stages/{stage}.py")
