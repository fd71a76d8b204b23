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
    """Repository-relative paths of the `srgan` modules that `module` imports directly.

    `from srgan.data import sources` names a module, `from srgan.data.sources import x` a module's
    members; package `__init__.py` files are not deps (a test below keeps them empty)."""
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "srgan":
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.startswith("srgan.")]
        else:
            continue
        paths = (name.replace(".", "/") + ".py" for name in names)
        found |= {path for path in paths if (REPO / path).is_file()}
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


def test_packages_hold_only_a_docstring() -> None:
    """What a package's `__init__.py` runs is imported by every stage that uses the package, but it
    is not a dvc.yaml dep; so it runs nothing."""
    for init in sorted((REPO / "srgan").rglob("__init__.py")):
        body = ast.parse(init.read_text()).body
        code = [node for node in body if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
        if init.parent == REPO / "srgan":
            code = [node for node in code if not (isinstance(node, ast.Assign) and node.targets[0].id == "__version__")]
        assert body and not code, f"{init.relative_to(REPO)}: only a docstring (and __version__ at the top)"


# What only the `srgan` command runs: `srgan eval`'s folder reading and JSON line, upscale's job
# planning and video, export. Editing any of it must leave `dvc status` clean. (The model zoo is a
# stage dependency: `pretrain.init` starts the pipeline from a released generator.)
CLI_ONLY = (
    "srgan/cli.py",
    "srgan/cli_eval.py",
    "srgan/evaluation/folders.py",
    "srgan/inference/upscale.py",
    "srgan/inference/video.py",
    "srgan/inference/export.py",
)


@pytest.mark.parametrize("stage", list(SPEC["stages"]))
def test_code_only_the_command_runs_is_no_stage_dependency(stage: str) -> None:
    assert all((REPO / path).is_file() for path in CLI_ONLY)
    assert not set(CLI_ONLY) & set(SPEC["stages"][stage]["deps"])
    assert not set(CLI_ONLY) & import_closure(f"stages/{stage}.py")
