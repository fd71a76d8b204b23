"""The docs stay true: every relative link and image in README.md and docs/ resolves, and every
`params.yaml` key, `srgan` subcommand and option, and test cited as `file::name` that they name
exists. A rename that leaves a stale sentence behind fails here; each check is also shown
catching a planted mistake."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import yaml

from srgan.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# `section.key` (or `section.key.sub`, `section.key=value`) in backticks or after `-S`, for the
# sections of params.yaml that hold keys.
PARAM = re.compile(r"(?:`|-S\s+'?)((?:%s)\.[a-z_]+(?:\.[a-z_]+)?)" % "|".join(
    key for key, value in PARAMS.items() if isinstance(value, dict)
))  # fmt: skip
COMMAND = re.compile(r"(?:^|&&|;|\|)[ \t]*(?:\$[ \t]*)?srgan ([a-z]+)((?:[ \t]+[^\s`|&;#)]+)*)", re.M)
CODE = re.compile(r"```.*?```|`[^`\n]+`", re.S)
CITED_TEST = re.compile(r"\b((?:tests/)?test_\w+\.py)::(\w+)")


def broken_links(path: Path, text: str) -> list[str]:
    """Relative link and image targets in `text` (the file `path`) that do not exist."""
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        if not (path.parent / target.split("#")[0]).exists():
            broken.append(target)
    return broken


def unknown_params(text: str) -> list[str]:
    """The `section.key` names in `text` that params.yaml does not hold."""
    unknown = []
    for name in PARAM.findall(text):
        node: object = PARAMS
        for part in name.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None and name not in unknown:
            unknown.append(name)
    return unknown


def _options(parser: argparse.ArgumentParser) -> dict[str, set[str]]:
    """Each subcommand (and `registry prune`) with the options it takes."""
    found = {}
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for name, sub in action.choices.items():
            found[name] = {opt for a in sub._actions for opt in a.option_strings}
            if sub._subparsers is not None:
                for inner in sub._subparsers._group_actions:
                    for sub_name, subsub in inner.choices.items():
                        found[name] |= {sub_name} | {opt for a in subsub._actions for opt in a.option_strings}
    return found


OPTIONS = _options(build_parser())


def unknown_cli(text: str) -> list[str]:
    """`srgan <command> --option` uses in `text`'s code (fenced blocks and backtick spans) whose
    command or option the CLI does not have."""
    unknown = []
    for code in CODE.findall(text):
        for command, rest in COMMAND.findall(code.strip("`")):
            if command not in OPTIONS:
                unknown.append(f"srgan {command}")
                continue
            for word in rest.split():
                option = word.split("=")[0]
                if option.startswith("-") and option not in OPTIONS[command] and option not in ("-", "--"):
                    unknown.append(f"srgan {command} {option}")
    return unknown


def missing_tests(text: str) -> list[str]:
    """`test_x.py::test_name` citations whose file or function does not exist."""
    missing = []
    for file, name in CITED_TEST.findall(text):
        path = REPO / "tests" / Path(file).name
        if not path.is_file() or not re.search(rf"^(?:def|class) {name}\b", path.read_text(), re.M):
            missing.append(f"{file}::{name}")
    return missing


def test_every_relative_link_and_image_resolves() -> None:
    assert {
        str(p.relative_to(REPO)): broken_links(p, p.read_text()) for p in DOCS if broken_links(p, p.read_text())
    } == {}


def test_every_params_key_the_docs_name_exists() -> None:
    assert {
        str(p.relative_to(REPO)): unknown_params(p.read_text()) for p in DOCS if unknown_params(p.read_text())
    } == {}


def test_every_srgan_command_and_option_the_docs_show_exists() -> None:
    assert {str(p.relative_to(REPO)): unknown_cli(p.read_text()) for p in DOCS if unknown_cli(p.read_text())} == {}


def test_every_test_the_docs_cite_exists() -> None:
    assert {str(p.relative_to(REPO)): missing_tests(p.read_text()) for p in DOCS if missing_tests(p.read_text())} == {}


def test_each_check_catches_a_planted_mistake(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "there.png").write_bytes(b"")
    text = (
        "![ok](there.png) [gone](missing.md) [web](https://example.org) [anchor](#top)\n"
        "`train.adv_weight` and `train.adv_wieght`; `dvc exp run -S model.blokcs=8`\n"
        "```\nsrgan upscale photo.jpg -o out/ --tile 256 --tiel 128\nsrgan upscael photo.jpg\n```\n"
        "`tests/test_docs.py::test_each_check_catches_a_planted_mistake`, `test_docs.py::test_gone`\n"
    )
    page.write_text(text)
    assert broken_links(page, text) == ["missing.md"]
    assert unknown_params(text) == ["train.adv_wieght", "model.blokcs"]
    assert unknown_cli(text) == ["srgan upscale --tiel", "srgan upscael"]
    assert missing_tests(text) == ["test_docs.py::test_gone"]
