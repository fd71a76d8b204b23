"""One source of defaults: the schema's defaults are the committed params.yaml's values."""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest
import yaml
from project import run

from srgan.core.config import Params, flatten, load_params

REPO = Path(__file__).resolve().parents[1]


def _flat(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_every_schema_default_equals_the_committed_params_yaml() -> None:
    """A key missing from a params file (tests' tiny ones, a user's trimmed one) gets the value
    users read in params.yaml, never a second, silently different default."""
    committed = _flat(yaml.safe_load((REPO / "params.yaml").read_text()))
    defaults = flatten(Params())
    assert sorted(defaults) == sorted(committed)  # params.yaml lists every key
    differing = {key: (defaults[key], committed[key]) for key in defaults if defaults[key] != committed[key]}
    assert differing == {}
    assert flatten(load_params(REPO / "params.yaml")) == defaults


@pytest.mark.e2e  # the DVC CLI in a scratch git repository
def test_an_exp_run_list_edit_changes_only_the_lists_own_lines(tmp_path: Path) -> None:
    """`dvc exp run -S 'data.eval=[set5,set14]'` (the form `make paper` uses) rewrites the list in
    the committed params.yaml and nothing else: every comment, blank line and key stays put. DVC
    writes lists in block style and takes the blank line after a section's last key with it."""
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    stage = {"cmd": "cp params.yaml seen.yaml", "params": ["data.eval"], "outs": ["seen.yaml"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"copy": stage}}))
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"]):
        run(cmd, tmp_path)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], tmp_path)
    before = (tmp_path / "params.yaml").read_text().splitlines()
    run(["dvc", "exp", "run", "-S", "data.eval=[set5,set14]"], tmp_path)
    after = (tmp_path / "params.yaml").read_text().splitlines()
    changed = [line for line in difflib.ndiff(before, after) if line.startswith(("- ", "+ "))]
    assert changed == ["-   - sample", "+   - set5", "+   - set14"], "\n".join(changed)
