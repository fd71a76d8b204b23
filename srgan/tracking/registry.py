"""The model registry's housekeeping: `srgan registry prune` deletes the versions of
`srgan-generator` no one points at any more, beyond the newest N."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from srgan.core.provenance import file_sha256
from srgan.tracking.remote import EXPERIMENT, tracking_uri
from srgan.tracking.store import REGISTERED_MODEL, retry, use_store


def prune_registry(keep: int, current: list[Path], dry_run: bool = False) -> tuple[list[str], dict[str, str]]:
    """Delete registered versions of `srgan-generator` beyond the `keep` newest, except those
    still pointed at: a version with an alias, the version of the run that wrote one of the
    `current` model files (by the sha256 its run recorded, as lineage finds it), and the version
    the newest evaluate run's `lineage.srgan_run_id` measured. The runs and their artifacts stay.

    Returns the versions deleted (or, with `dry_run`, that would be) and the kept ones beyond
    `keep` with the reason each was kept."""
    use_store(tracking_uri())
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
