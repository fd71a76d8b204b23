"""The MLflow store survives a process killed while it builds it (a stage SIGKILLed at start) and two
runs logging one dataset at once; the registry can be pruned without losing what is still pointed at."""

from __future__ import annotations

import http.server
import sqlite3
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import sqlalchemy
import torch
from mlflow.tracking import MlflowClient

from srgan.cli import main
from srgan.core.errors import SrganError
from srgan.models.checkpoint import generator_config, save_generator
from srgan.models.networks import Generator
from srgan.tracking.remote import check_server, patience_s
from srgan.tracking.runs import stage_run

REPO = Path(__file__).resolve().parents[1]
# One interpreter imports the store code once (about 5 s on 2 cores), then forks a child per
# offset: the child builds a new store, and is SIGKILLed `offset` s after building began. Then
# the parent does what the next stage does: opens each store (building it if absent) and uses it.
KILL_AND_REOPEN = """
import os, signal, sys, time
from pathlib import Path
from mlflow.tracking import MlflowClient
from srgan.tracking.store import use_store
stores = []
for i, offset in enumerate(map(float, sys.argv[2:])):
    store = Path(sys.argv[1]) / f"s{i}" / "mlflow.db"
    store.parent.mkdir()
    pid = os.fork()
    if pid == 0:
        use_store(f"sqlite:///{store}")
        os._exit(0)
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if any(store.parent.iterdir()):  # building has begun
            time.sleep(offset)
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            break
        time.sleep(0.005)
    stores.append(store)
for store in stores:
    use_store(f"sqlite:///{store}")
    MlflowClient(f"sqlite:///{store}").create_experiment("x")
"""


@pytest.mark.e2e  # processes killed while they build a store
def test_a_kill_while_the_store_is_built_leaves_it_complete_or_absent(tmp_path: Path) -> None:
    """MLflow builds a new store by a chain of migrations (about half a second here). Killed in
    the middle, a plain MlflowClient left a half-migrated file on which every later run failed
    ("table _alembic_tmp_experiments already exists"); seen in 4 of 26 kills spread over start-up."""
    offsets = ("0.0", "0.1", "0.2", "0.3", "0.4", "0.5")
    result = subprocess.run(
        [sys.executable, "-c", KILL_AND_REOPEN, str(tmp_path), *offsets],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(list(tmp_path.glob("s*/mlflow.db"))) == len(offsets)


def test_two_runs_logging_one_dataset_at_once_both_record_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two queued experiments' train stages log the same prepared data at once. MLflow looks for the
    dataset's row, then inserts it; here another run inserts and commits that row in between (a
    second sqlite connection, at the moment this run's insert is sent), so this run's insert
    breaks the unique key. On the previous main the stage failed there (CI, test_queue)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "prepared").mkdir()
    raced = []

    def insert_first(conn, cursor, statement: str, *args: object) -> None:
        if statement.startswith("INSERT INTO datasets") and not raced:
            other = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
            other.execute(
                "INSERT INTO datasets (dataset_uuid, experiment_id, name, digest, dataset_source_type, dataset_source)"
                " SELECT ?, experiment_id, 'prepared', 'd1', 'local', '{}' FROM experiments WHERE name = 'srgan'",
                (uuid.uuid4().hex,),
            )
            other.close()
            raced.append(statement)

    with stage_run("train", {}) as tracker:
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", insert_first)
        try:
            tracker.log_dataset("prepared", tmp_path / "prepared", "d1", context="training")
        finally:
            sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", insert_first)
    assert len(raced) == 1  # the other run's row was there before this run's insert: the race happened
    (logged,) = MlflowClient().get_run(tracker.run_id).inputs.dataset_inputs
    assert (logged.dataset.name, logged.dataset.digest, logged.tags[0].value) == ("prepared", "d1", "training")


def test_registry_prune_keeps_the_newest_and_every_version_still_pointed_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Six train runs register versions 1–6; version 1 wrote the current models/srgan.pt, version 2
    has an alias, version 3 is what the newest evaluate run measured. `--keep 2` deletes 4 alone
    (5 and 6 are the newest), and the runs themselves stay."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "models").mkdir()
    run_ids = []
    for index in range(6):
        torch.manual_seed(index)
        gen = Generator(scale=4, blocks=1, channels=4)
        written = tmp_path / ("models/srgan.pt" if index == 0 else f"gen{index}.pt")
        save_generator(written, gen, generator_config(4, 1, 4, False))
        with stage_run("train", {}) as tracker:
            tracker.register_generator(tracker.log_generator(written))
            if index == 0:
                tracker.record_output(written)
            run_ids.append(tracker.run_id)
    with stage_run("evaluate", {}) as tracker:
        tracker.set_tags({"lineage.srgan_run_id": run_ids[2]})
    client = MlflowClient()
    client.set_registered_model_alias("srgan-generator", "champion", "2")

    main(["registry", "prune", "--keep", "2", "--dry-run"])
    assert capsys.readouterr().out.splitlines()[0] == "srgan-generator: would delete 1 version (4); the newest 2 kept"
    assert len(client.search_model_versions("name = 'srgan-generator'")) == 6
    main(["registry", "prune", "--keep", "2"])
    assert capsys.readouterr().out.splitlines() == [
        "srgan-generator: deleted 1 version (4); the newest 2 kept",
        "  kept version 3: measured by the newest evaluate run",
        "  kept version 2: alias champion",
        f"  kept version 1: wrote the current {tmp_path / 'models' / 'srgan.pt'}",
    ]
    assert sorted(int(v.version) for v in client.search_model_versions("name = 'srgan-generator'")) == [1, 2, 3, 5, 6]
    assert all(client.get_run(run_id).info.lifecycle_stage == "active" for run_id in run_ids)


def test_registry_prune_outside_a_repository_says_so_and_creates_no_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(SystemExit):
        main(["registry", "prune", "--keep", "3"])
    assert capsys.readouterr().err.startswith(f"error: no MLflow store here ({tmp_path / 'mlflow.db'} does not exist)")
    assert list(tmp_path.iterdir()) == []


def test_a_malformed_patience_setting_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("ten", "0", "-5", "nan"):
        monkeypatch.setenv("SRGAN_TRACKING_PATIENCE_S", value)
        with pytest.raises(SrganError, match=f"^SRGAN_TRACKING_PATIENCE_S='{value}': not a positive number"):
            patience_s()
    monkeypatch.setenv("SRGAN_TRACKING_PATIENCE_S", "2.5")
    assert patience_s() == 2.5
    monkeypatch.delenv("SRGAN_TRACKING_PATIENCE_S")
    assert patience_s() == 600


def test_a_web_server_that_is_not_mlflow_and_a_closed_port_are_named_without_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real HTTP server on localhost that is no MLflow server (a 404 page), and a closed port;
    a password written into the URI is masked in the message."""
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        uri = f"http://user:s3cret@127.0.0.1:{server.server_address[1]}"
        with pytest.raises(SrganError) as refused:
            check_server(uri)
        shown_uri = f"http://user:***@127.0.0.1:{server.server_address[1]}"
        assert str(refused.value).startswith(f"{shown_uri}: answers HTTP 404 to MLflow's REST API; is it an MLflow")
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(SrganError) as closed:
        check_server(uri)  # the same port, now closed
    assert "does not answer (Connection refused)" in str(closed.value) and "s3cret" not in str(closed.value)
    check_server("sqlite:////nowhere/mlflow.db")  # a local store is not asked
