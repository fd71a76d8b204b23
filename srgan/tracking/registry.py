"""The model registry of `srgan-generator`: `srgan registry list` shows each version with its
scores, and `srgan registry prune` deletes the versions no one points at any more, beyond the
newest N.

The evaluate stage tags the version it measured `eval.<convention>.<set>.<metric>`: the
convention is part of the key, because the same version measured under `matlab` and `basicsr`
holds two sets of numbers that must not overwrite each other or be compared with each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

from srgan.core.config import CONVENTIONS
from srgan.core.provenance import file_sha256
from srgan.tracking.remote import EXPERIMENT
from srgan.tracking.store import REGISTERED_MODEL, open_store, retry

# The scores `srgan registry list` shows (MSE is tagged too; PSNR says the same), with the
# decimals the reports give them.
LISTED = (("psnr", "PSNR", 2), ("ssim", "SSIM", 4), ("lpips", "LPIPS", 4), ("niqe", "NIQE", 2))
UNNAMED = "?"  # the convention of an `eval.<set>.<metric>` tag, written before keys named it
NONE = "-"


def prune_registry(keep: int, current: list[Path], dry_run: bool = False) -> tuple[list[str], dict[str, str]]:
    """Delete registered versions of `srgan-generator` beyond the `keep` newest, except those
    still pointed at: a version with an alias, the version of the run that wrote one of the
    `current` model files (by the sha256 its run recorded, as lineage finds it), and the version
    the newest evaluate run's `lineage.srgan_run_id` measured. The runs and their artifacts stay.

    Returns the versions deleted (or, with `dry_run`, that would be) and the kept ones beyond
    `keep` with the reason each was kept."""
    open_store()
    client = MlflowClient()
    versions = sorted(
        retry(lambda: client.search_model_versions(f"name = '{REGISTERED_MODEL}'")),
        key=lambda v: int(v.version),
        reverse=True,
    )
    pinned: dict[str, str] = {}  # run id -> why its version stays
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        for path in (p for p in current if p.is_file()):
            key = f"output.{path.name}.sha256"
            runs = client.search_runs([experiment.experiment_id], f"tags.`{key}` = '{file_sha256(path)}'")
            pinned.update({run.info.run_id: f"wrote the current {path}" for run in runs})
        evaluations = client.search_runs(
            [experiment.experiment_id], "tags.stage = 'evaluate'", order_by=["start_time DESC"], max_results=1
        )
        for run in evaluations:
            if run.data.tags.get("lineage.srgan_run_id"):
                pinned.setdefault(run.data.tags["lineage.srgan_run_id"], "measured by the newest evaluate run")
    deleted, kept = [], {}
    for version in versions[keep:]:
        detail = retry(lambda: client.get_model_version(REGISTERED_MODEL, version.version))
        number = str(version.version)
        if detail.aliases:
            kept[number] = f"alias {', '.join(detail.aliases)}"
        elif version.run_id in pinned:
            kept[number] = pinned[version.run_id]
        else:
            if not dry_run:
                retry(lambda: client.delete_model_version(REGISTERED_MODEL, version.version))
            deleted.append(number)
    return deleted, kept


@dataclass(frozen=True)
class Row:
    """One line of `srgan registry list`: a version, and its scores of one evaluation (one
    convention on one eval set); `scores` maps a metric name to its tag's text."""

    version: str
    aliases: str
    dvc_exp: str
    commit: str
    convention: str
    eval_set: str
    scores: dict[str, str]


def evaluations(tags: dict[str, str]) -> dict[tuple[str, str], dict[str, str]]:
    """A version's `eval.*` tags by (convention, eval set): `eval.<convention>.<set>.<metric>`
    (a set's name may hold dots; the convention is the key's second part and one of
    `CONVENTIONS`), and an older `eval.<set>.<metric>` under convention `UNNAMED`."""
    found: dict[tuple[str, str], dict[str, str]] = {}
    for key, value in tags.items():
        parts = key.split(".")
        if parts[0] != "eval" or len(parts) < 3:
            continue
        named = len(parts) >= 4 and parts[1] in CONVENTIONS
        convention, eval_set = (parts[1], parts[2:-1]) if named else (UNNAMED, parts[1:-1])
        found.setdefault((convention, ".".join(eval_set)), {})[parts[-1]] = value
    return found


def registry_rows() -> list[Row]:
    """Every version of `srgan-generator`, oldest first, a row per convention and eval set it was
    evaluated on (conventions in `CONVENTIONS`' order), or one row of `NONE` if it never was."""
    open_store()
    client = MlflowClient()
    versions = sorted(
        retry(lambda: client.search_model_versions(f"name = '{REGISTERED_MODEL}'")), key=lambda v: int(v.version)
    )
    aliases: dict[str, list[str]] = {}
    if versions:
        for alias, number in retry(lambda: client.get_registered_model(REGISTERED_MODEL)).aliases.items():
            aliases.setdefault(str(number), []).append(alias)
    order = {name: index for index, name in enumerate((*CONVENTIONS, UNNAMED, NONE))}
    rows = []
    for version in versions:
        number, tags = str(version.version), version.tags
        found = evaluations(tags) or {(NONE, NONE): {}}
        for (convention, eval_set), scores in sorted(found.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])):
            rows.append(
                Row(
                    version=number,
                    aliases=",".join(sorted(aliases.get(number, []))) or NONE,
                    dvc_exp=tags.get("dvc_exp") or NONE,
                    commit=tags.get("git_commit", "")[:7] or NONE,
                    convention=convention,
                    eval_set=eval_set,
                    scores=scores,
                )
            )
    return rows


def registry_table(rows: list[Row]) -> list[str]:
    """`rows` as plain-text lines in aligned columns (numbers right-aligned), a header first; a
    footnote explains `UNNAMED` where it appears."""
    header = ["version", "aliases", "dvc_exp", "commit", "convention", "set", *(title for _, title, _ in LISTED)]
    cells = [
        [row.version, row.aliases, row.dvc_exp, row.commit, row.convention, row.eval_set]
        + [_score(row.scores.get(name), decimals) for name, _, decimals in LISTED]
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    numeric = len(header) - len(LISTED)  # the scores, right-aligned

    def aligned(line: list[str]) -> str:
        padded = [text.rjust(w) if i >= numeric else text.ljust(w) for i, (text, w) in enumerate(zip(line, widths))]
        return "  ".join(padded).rstrip()

    lines = [aligned(line) for line in [header, *cells]]
    if any(row.convention == UNNAMED for row in rows):
        lines.append(f"{UNNAMED}: tagged eval.<set>.<metric> by an evaluate stage older than convention-named tags")
    return lines


def _score(text: str | None, decimals: int) -> str:
    """A tag's number with the reports' decimals; `NONE` if absent, the text itself if no number."""
    if text is None:
        return NONE
    try:
        return f"{float(text):.{decimals}f}"
    except ValueError:
        return text[:10]
