"""Training stages end to end on tiny shards: resume after SIGKILL, NaN guard, MLflow records."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from project import image_steps
from tiny_stage import PRETRAIN, TRAIN, stage, wait_for_first_checkpoint, write_tiny_project

from srgan.core.errors import SrganError
from srgan.models import checkpoint
from srgan.models.checkpoint import generator_config, load_generator, save_generator
from srgan.models.networks import Generator
from stages import pretrain as pretrain_stage


@pytest.mark.e2e  # stage processes, run and stopped as DVC and a terminal do
def test_a_sigkill_between_checkpoints_resumes_to_the_configured_step_and_logs_each_step_once(
    tmp_path: Path,
) -> None:
    """A crash after the checkpoint at step 50 but after steps 60, 70… were logged: the resumed
    execution continues from the checkpoint, redoes those steps, and ends at the configured step;
    the curves CSV loses and repeats no row, and the run's MLflow curve holds each step once."""
    write_tiny_project(tmp_path, steps=200)
    params = tmp_path / "params.yaml"
    params.write_text(params.read_text().replace("checkpoint_every: 5", "checkpoint_every: 50"))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    proc = stage(tmp_path, "pretrain", *PRETRAIN)
    wait_for_first_checkpoint(tmp_path)
    deadline = time.time() + 120
    logged: list[int] = []
    while max(logged, default=0) < 70:
        assert proc.poll() is None and time.time() < deadline, "the stage ended before step 70 was logged"
        time.sleep(0.05)
        runs = client.search_runs([client.get_experiment_by_name("srgan").experiment_id])
        logged = [point.step for point in client.get_metric_history(runs[0].info.run_id, "loss")] if runs else []
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "models" / "srresnet.pt").exists()
    saved = torch.load(next((tmp_path / ".cache" / "pretrain").glob("*/last.pt")), weights_only=True)
    assert saved["step"] % 50 == 0 and 50 <= saved["step"] < max(logged)  # points past it were logged

    second = stage(tmp_path, "pretrain", *PRETRAIN)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert int(err.split("resuming from step ")[1].split()[0]) == saved["step"]
    rows = (tmp_path / "reports" / "plots" / "pretrain.csv").read_text().splitlines()
    assert rows[0] == "step,loss,val_psnr,val_lpips"
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(10, 201, 10))  # none lost or repeated
    assert load_generator(tmp_path / "models" / "srresnet.pt").scale == 4
    [run] = client.search_runs([client.get_experiment_by_name("srgan").experiment_id])
    assert [point.step for point in client.get_metric_history(run.info.run_id, "loss")] == list(range(10, 201, 10))
    assert [point.step for point in client.get_metric_history(run.info.run_id, "val_psnr")] == list(range(0, 201, 10))


@pytest.mark.e2e  # stage processes, run and stopped as DVC and a terminal do
def test_tiny_pretrain_and_train_are_recorded_in_mlflow_and_a_finished_run_is_not_resumed(tmp_path: Path) -> None:
    """What MLflow records of a pretrain and a train run; then the same pretrain again (what
    `dvc repro -f` runs) trains from step 0 instead of "resuming" at its last step, and pretrain
    in another precision trains on its own instead of resuming the fp32 run."""
    write_tiny_project(tmp_path, steps=20)
    # MLflow samples, waits the interval, then asks the store whether the run still runs (its
    # first client takes seconds to open the store) before it logs the sample: a run that ends
    # first logs none, and the tiny pretrain is about that short. At 1 s, 2 of 3 runs alone logged
    # none (the release of 2026-12-03 too); at 0.2 s, 4 of 4 logged samples.
    sample_often = {"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.2"}  # MLflow's default: 10 s
    first = stage(tmp_path, "pretrain", *PRETRAIN, env=sample_often)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    second = stage(tmp_path, "train", *TRAIN, env=sample_often)
    _, train_err = second.communicate(timeout=300)
    assert second.returncode == 0, train_err
    assert "Pickle" not in err + train_err  # MLflow's warning, which the user cannot act on

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("srgan")
    runs = {r.data.tags["stage"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"pretrain", "train"}
    train = runs["train"]
    assert train.data.params["train.adv_weight"] == "10.0"  # the params.yaml default
    assert train.data.params["runtime.resolved_precision"] == "fp32"
    assert train.data.params["runtime.world_size"] == "1"
    assert len(train.data.tags["git_commit"]) > 0 and "dvc_exp" in train.data.tags
    for key in ("g_content", "g_adv", "d_real", "d_fake", "d_x", "d_g_z", "val_psnr", "val_lpips"):
        history = client.get_metric_history(train.info.run_id, key)
        assert len(history) > 1, key
        assert history[-1].step == 12
    assert [m.step for m in client.get_metric_history(runs["pretrain"].info.run_id, "loss")] == [5, 10, 15, 20]
    assert image_steps(client, train.info.run_id, "validation")[-1] == 12
    # Outside DVC (no dvc.lock), the data's digest is the start of its manifest's sha256.
    manifest = hashlib.sha256((tmp_path / "data" / "prepared" / "manifest.json").read_bytes()).hexdigest()
    for run in runs.values():
        inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
        assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [("prepared", f"manifest:{manifest[:16]}")]
    assert runs["train"].data.tags["lineage.srresnet_run_id"] == runs["pretrain"].info.run_id
    # System metrics, so a slow run can be told from a starved one.
    for run in runs.values():
        cpu = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
        memory = client.get_metric_history(run.info.run_id, "system/system_memory_usage_megabytes")
        assert cpu and all(0 <= m.value <= 100 for m in cpu), run.data.tags["stage"]
        assert memory and all(m.value > 0 for m in memory), run.data.tags["stage"]

    import mlflow.pyfunc

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    logged = mlflow.pyfunc.load_model(f"runs:/{train.info.run_id}/generator")  # the tensor model, as served
    assert logged.predict(torch.rand(1, 3, 10, 12).numpy()).shape == (1, 3, 40, 48)
    reference = load_generator(tmp_path / "models" / "srgan.pt")
    x = torch.rand(1, 3, 9, 7)
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(logged.predict(x.numpy())), reference(x), atol=1e-6)

    fp32_model = (tmp_path / "models" / "srresnet.pt").read_bytes()
    again = stage(tmp_path, "pretrain", *PRETRAIN)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "resuming" not in err and "holds a finished run; training again from step 0" in err
    pretrain_runs = client.search_runs([experiment.experiment_id], "tags.stage = 'pretrain'")
    assert len(pretrain_runs) == 2
    for pretrain_run in pretrain_runs:
        assert [m.step for m in client.get_metric_history(pretrain_run.info.run_id, "loss")] == [5, 10, 15, 20]
    assert (tmp_path / "models" / "srresnet.pt").read_bytes() == fp32_model  # the same params train the same bytes

    params = tmp_path / "params.yaml"
    params.write_text(params.read_text().replace("precision: fp32", "precision: bf16"))
    bf16 = stage(tmp_path, "pretrain", *PRETRAIN)
    _, err = bf16.communicate(timeout=300)
    assert bf16.returncode == 0, err
    assert "resuming" not in err and "holds a finished run" not in err
    assert len(list((tmp_path / ".cache" / "pretrain").glob("*/last.pt"))) == 2
    assert (tmp_path / "models" / "srresnet.pt").read_bytes() != fp32_model


@pytest.mark.e2e  # stage processes, run and stopped as DVC and a terminal do
def test_nan_loss_stops_the_stage_and_keeps_the_last_checkpoint(tmp_path: Path) -> None:
    """A run stopped at a checkpoint resumes with Adam's running means poisoned (×1e30: the
    next update throws the weights to inf, as a runaway learning rate would). The loss check
    must stop the stage before a checkpoint is written from those weights: the good one stays."""
    write_tiny_project(tmp_path, steps=400)
    first = stage(tmp_path, "pretrain", *PRETRAIN)
    checkpoints = wait_for_first_checkpoint(tmp_path)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    (path,) = checkpoints.glob("*/last.pt")
    saved = checkpoint.load(path, checkpoint.TRAINING_FORMAT)
    for state in saved["opt_g"]["state"].values():
        state["exp_avg"] = state["exp_avg"] * 1e30
    checkpoint.save(path, saved)
    good = path.read_bytes()

    second = stage(tmp_path, "pretrain", *PRETRAIN)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 2, err
    failed_at = int(re.search(r"error: pretrain: loss loss=(?:nan|inf) at step (\d+);", err).group(1))
    assert saved["step"] < failed_at < 400
    assert path.read_bytes() == good  # not overwritten with the non-finite weights
    assert all(torch.isfinite(v).all() for v in saved["generator"].values() if v.is_floating_point())
    assert not (tmp_path / "models" / "srresnet.pt").exists()


def test_checkpoint_from_another_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "g.pt"
    save_generator(path, Generator(2, 1, 8), generator_config(2, 1, 8, False))
    with pytest.raises(SrganError, match="built with scale=2, but the params ask for scale=4"):
        load_generator(path, expect={"scale": 4, "blocks": 1, "channels": 8, "bicubic_skip": False})
    with pytest.raises(SrganError, match="built with blocks=1"):
        load_generator(path, expect={"scale": 2, "blocks": 16})


def test_crafted_pickle_is_refused_and_its_code_does_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "srgan-generator-v1", "payload": Exploit()}, path)
    with pytest.raises(SrganError, match="is not an srgan checkpoint .it holds Python objects"):
        load_generator(path)
    assert not marker.exists()


def test_unknown_and_ill_typed_params_fail_before_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stage's own `main()`, in this process (the refusal comes before any work, so a
    subprocess would only add its start-up): exit 2, one line naming the key, no MLflow store."""
    write_tiny_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(sys, "argv", ["pretrain", *PRETRAIN])
    for bad, key in (("train: {adv_wieght: 0.1}", "train.adv_wieght"), ("train: {steps: -1}", "train.steps=-1")):
        (tmp_path / "params.yaml").write_text(bad)
        with pytest.raises(SystemExit) as exit_:
            pretrain_stage.main()
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.strip().count("\n") == 0 and key in err
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.e2e  # stage processes, run and stopped as DVC and a terminal do
def test_ctrl_c_in_a_terminal_saves_a_checkpoint_and_the_resumed_execution_is_one_mlflow_run(tmp_path: Path) -> None:
    """A terminal sends SIGINT to the whole foreground process group, DataLoader worker included.
    The worker must outlive it: the main process stops at the next log step and needs batches
    until then (the first checkpoint is written at a log step, so ten batches are still due)."""
    write_tiny_project(tmp_path, steps=400)
    params = tmp_path / "params.yaml"
    params.write_text(
        params.read_text().replace("workers: 0", "workers: 1").replace("checkpoint_every: 5", "checkpoint_every: 50")
    )
    proc = stage(tmp_path, "pretrain", *PRETRAIN, start_new_session=True)
    checkpoints = wait_for_first_checkpoint(tmp_path)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    interrupted_at = int(err.split("interrupted at step ")[1].split("/")[0])
    assert "checkpoint saved" in err and "again to resume" in err
    saved = torch.load(next(checkpoints.glob("*/last.pt")), weights_only=True)
    assert saved["step"] == interrupted_at < 400  # the checkpoint holds the step the message names

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    [interrupted] = client.search_runs([client.get_experiment_by_name("srgan").experiment_id])
    assert interrupted.info.status == "KILLED"

    second = stage(tmp_path, "pretrain", *PRETRAIN)
    _, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    [run] = client.search_runs([client.get_experiment_by_name("srgan").experiment_id])
    assert run.info.run_id == interrupted.info.run_id and run.info.status == "FINISHED"
    # One curve, a point every 10 steps (and at the interrupt), none lost or repeated.
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "loss")]
    assert steps == sorted(set(range(10, 401, 10)) | {interrupted_at})
