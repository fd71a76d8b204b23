"""The house's floors: a module of `srgan/` imports only its own floor and the floors below, so a
part can be read, tested and reused without the parts built on it (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Lowest first. `srgan/cli.py`, the command, sits above them all.
FLOORS = ("core", "tracking", "data", "models", "inference", "training", "evaluation")


def floor(module: str) -> int:
    """The floor of a dotted `srgan…` module name (the command: above every floor)."""
    parts = module.split(".")
    return FLOORS.index(parts[1]) if len(parts) > 1 and parts[1] in FLOORS else len(FLOORS)


def upward_imports(package: Path) -> list[str]:
    """Every import in `package` (a `srgan` folder) of a module on a higher floor than the
    importer's, as "importer -> imported"; imports inside functions count too."""
    found = []
    for path in sorted(package.rglob("*.py")):
        importer = ".".join(("srgan", *path.relative_to(package).with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("srgan."):
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names if alias.name.startswith("srgan.")]
            else:
                continue
            found += [f"{importer} -> {name}" for name in names if floor(name) > floor(importer)]
    return found


def test_no_module_imports_from_a_higher_floor() -> None:
    assert upward_imports(REPO / "srgan") == []


def test_every_package_has_a_floor() -> None:
    packages = {p.name for p in (REPO / "srgan").iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(FLOORS)


def test_a_planted_upward_import_is_caught(tmp_path: Path) -> None:
    """Validation's LPIPS once lived in `evaluation`, imported by `training.steps`: caught."""
    for name in ("training", "models"):
        (tmp_path / name).mkdir()
    (tmp_path / "training" / "steps.py").write_text("from srgan.evaluation.lpips import lpips_model\n")
    (tmp_path / "models" / "zoo.py").write_text("def load():\n    from srgan.tracking.uris import load_generator\n")
    assert upward_imports(tmp_path) == ["srgan.training.steps -> srgan.evaluation.lpips"]


def test_no_module_is_over_330_lines() -> None:
    """One module, one concern: past 330 lines a module has been holding two."""
    sizes = {str(p.relative_to(REPO)): len(p.read_text().splitlines()) for p in (REPO / "srgan").rglob("*.py")}
    assert {path: n for path, n in sizes.items() if n > 330} == {}
