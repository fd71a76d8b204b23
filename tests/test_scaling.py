"""Scaling out (docs/scaling.md): a team's MLflow tracking server, and a DVC remote.

Both through the real CLIs, in a tiny copy of the project (conftest `served`): `srgan server` on
localhost (PostgreSQL, artifacts proxied through the server to its folder, logins), `dvc repro`
as user alice with `MLFLOW_TRACKING_URI` pointing at it; then `dvc push` to a local-folder remote
(the same code path as s3://, gs:// or ssh://, without the network), `git clone` and `dvc pull`
in another folder.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
from conftest import Served
from mlflow.tracking import MlflowClient
from project import TINY, image_steps, out_hashes, run
from team import PASSWORDS

from srgan.models.checkpoint import load_generator

# One worker of `pytest -n` runs every test of the served pipeline (here and test_team_server.py),
# so it is built once.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("served")]

STAGES = ("download", "preprocess", "pretrain", "train", "evaluate")


@contextlib.contextmanager
def global_tracking_uri(uri: str) -> Iterator[None]:
    """`mlflow.set_tracking_uri` also sets $MLFLOW_TRACKING_URI in this process; put both back."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # None unsets the variable again


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_stages_log_runs_metrics_and_models_to_a_shared_tracking_server(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, url = served.project, served.team.url
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORDS["alice"])
    # Nothing went to the local default store: runs and artifacts are the server's.
    assert not (project / "mlflow.db").exists()
    assert not (project / "mlruns").exists()

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("srgan")
    assert experiment is not None
    # Artifacts proxied through the server (not a path on the machine that ran the stage).
    assert experiment.artifact_location.startswith("mlflow-artifacts:"), experiment.artifact_location
    runs: dict[str, Any] = {}  # the first run of each stage: the fixture's `dvc repro`
    for r in client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"], max_results=1000):
        runs.setdefault(r.data.tags["stage"], r)
    assert sorted(runs) == sorted(STAGES)
    for stage, run_ in runs.items():
        assert run_.info.status == "FINISHED", stage
        assert run_.data.tags["git_commit"] == served.commit, stage
    assert runs["pretrain"].data.params["pretrain.steps"] == str(TINY["pretrain"]["steps"])

    # The pretrain curves on the server are the ones the stage wrote to its plots CSV.
    pretrain_id = runs["pretrain"].info.run_id
    curves = _csv(project / "reports" / "plots" / "pretrain.csv")
    loss = {m.step: m.value for m in client.get_metric_history(pretrain_id, "loss")}
    assert sorted(loss) == [int(row["step"]) for row in curves] == [10, 20]
    for row in curves:
        assert loss[int(row["step"])] == pytest.approx(float(row["loss"]), rel=1e-5)
    val_psnr = {m.step: m.value for m in client.get_metric_history(pretrain_id, "val_psnr")}
    assert sorted(val_psnr) == [0, 10, 20]
    assert val_psnr[20] == pytest.approx(float(curves[-1]["val_psnr"]), rel=1e-5)

    # The evaluate run holds every number of reports/metrics.json.
    metrics = json.loads((project / "reports" / "metrics.json").read_text())
    flat = {
        f"{s}.{m}.{k}": v for s, models in metrics.items() for m, scores in models.items() for k, v in scores.items()
    }
    assert runs["evaluate"].data.metrics == pytest.approx(flat)

    # Artifacts: listed through the server, stored in its --artifacts-destination.
    assert 20 in image_steps(client, pretrain_id, "validation")
    stored = served.team.folder / "artifacts"
    assert len(list(stored.rglob("MLmodel"))) >= 2  # pretrain's and train's generators (and later tests')
    assert any(stored.rglob("validation+step+20+*.png"))

    # The logged generators, loaded through the server, compute what the DVC outs compute.
    lr_img = torch.rand(2, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    with global_tracking_uri(url):
        for stage, out in (("pretrain", "srresnet.pt"), ("train", "srgan.pt")):
            logged = mlflow.pyfunc.load_model(f"runs:/{runs[stage].info.run_id}/generator")  # the tensor model
            with torch.no_grad():
                expected = load_generator(project / "models" / out)(lr_img)
            torch.testing.assert_close(torch.from_numpy(logged.predict(lr_img.numpy())), expected)


def test_a_dvc_remote_gives_a_fresh_clone_the_data_and_models(served: Served, tmp_path: Path) -> None:
    project = served.project
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "store", str(remote)], project)
    run(["git", "add", ".dvc/config", "dvc.lock", "reports"], project)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results and DVC remote"], project)
    run(["dvc", "push"], project)
    assert any(p.is_file() for p in remote.rglob("*"))

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    assert not (clone / "models").exists() and not (clone / "data").exists()
    run(["dvc", "pull"], clone)
    assert out_hashes(clone) == out_hashes(project)
    for model in ("srresnet.pt", "srgan.pt", "discriminator.pt"):
        assert (clone / "models" / model).read_bytes() == (project / "models" / model).read_bytes(), model
    assert "Data and pipelines are up to date" in run(["dvc", "status"], clone).stdout

    # Only evaluate runs again, on the pulled data and models, and gives the same numbers.
    (clone / "reports" / "metrics.json").unlink()
    out = run(["dvc", "repro", "--force", "--single-item", "evaluate"], clone)
    log = out.stdout + out.stderr
    assert "Running stage 'evaluate'" in log
    for stage in ("download", "preprocess", "pretrain", "train"):
        assert f"Running stage '{stage}'" not in log, stage
    assert (clone / "reports" / "metrics.json").read_bytes() == (project / "reports" / "metrics.json").read_bytes()
    assert "Data and pipelines are up to date" in run(["dvc", "status"], clone).stdout
