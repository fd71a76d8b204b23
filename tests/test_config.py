"""One source of defaults: the schema's defaults are the committed params.yaml's values."""

from __future__ import annotations

from pathlib import Path

import yaml

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
