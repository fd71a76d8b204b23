"""`srgan registry list` reads back, per version of `srgan-generator`, the scores the evaluate stage
tagged under each metric convention; and every command that reads a tracking server (`upscale`,
`eval` and `export` of a model URI, `registry list` and `prune`) refuses one that does not answer
in one line, within seconds, where MLflow's own HTTP retries used to hang for minutes."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image
from project import BIN, run

from srgan.cli import main

# Tags as the evaluate stage writes them: `eval.<convention>.<set>.<metric>`, the value the text of
# its rounded number. Version 1 was measured on two sets under matlab and again under basicsr.
MATLAB_SAMPLE = {"psnr": 29.5471, "ssim": 0.8275, "mse": 72.2, "lpips": 0.1834, "niqe": 5.4583}
MATLAB_SET5 = {"psnr": 31.0249, "ssim": 0.8812, "mse": 51.3, "lpips": 0.1302, "niqe": 6.0087}
BASICSR_SAMPLE = {"psnr": 29.6203, "ssim": 0.8301, "mse": 71.0, "lpips": 0.1839, "niqe": 5.4717}
NO_ADV_SAMPLE = {"psnr": 29.7012, "ssim": 0.8359, "mse": 69.8, "lpips": 0.1871, "niqe": 6.1278}


def eval_tags(convention: str, eval_set: str, scores: dict[str, float]) -> dict[str, str]:
    return {f"eval.{convention}.{eval_set}.{metric}": str(value) for metric, value in scores.items()}


def registry_store(root: Path) -> str:
    """A sqlite store under `root` whose `srgan-generator` has four versions: 1 (workspace, alias
    champion) evaluated under matlab on sample and set5 and under basicsr on sample; 2 (experiment
    no-adv, its alias) under matlab on a folder whose set name holds a dot; 3 never evaluated; 4
    tagged `eval.<set>.<metric>` by an evaluate stage older than convention-named tags. Returns
    its URI."""
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("srgan", artifact_location=(root / "mlruns").as_uri())
    client.create_registered_model("srgan-generator")
    first = {
        **eval_tags("matlab", "sample", MATLAB_SAMPLE),
        **eval_tags("matlab", "set5", MATLAB_SET5),
        **eval_tags("basicsr", "sample", BASICSR_SAMPLE),
    }
    versions = [
        ("", "21ab5cb9f00d4e1a", first),
        ("no-adv", "9f8e7d6c5b4a3928", eval_tags("matlab", "my.photos-1a2b3c4d", NO_ADV_SAMPLE)),
        ("", "0123456789abcdef", {}),
        ("", "fedcba9876543210", {"eval.sample.psnr": "28.1", "eval.sample.lpips": "0.2"}),
    ]
    for dvc_exp, commit, scores in versions:
        tags = {"dvc_exp": dvc_exp, "git_commit": commit}  # as the train stage registers a version
        run_ = client.create_run(experiment, tags=tags)
        source = f"{run_.info.artifact_uri}/generator"
        version = client.create_model_version("srgan-generator", source, run_.info.run_id, tags={**tags, **scores})
        if dvc_exp:
            client.set_registered_model_alias("srgan-generator", dvc_exp, version.version)
    client.set_registered_model_alias("srgan-generator", "champion", "1")
    return uri


def test_registry_list_shows_each_versions_scores_per_convention_and_eval_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry_store(tmp_path))
    capsys.readouterr()  # MLflow's log of building the store
    main(["registry", "list"])
    listed = capsys.readouterr()
    assert listed.out.splitlines() == [
        "version  aliases   dvc_exp  commit   convention  set                  PSNR    SSIM   LPIPS  NIQE",
        "1        champion  -        21ab5cb  matlab      sample              29.55  0.8275  0.1834  5.46",
        "1        champion  -        21ab5cb  matlab      set5                31.02  0.8812  0.1302  6.01",
        "1        champion  -        21ab5cb  basicsr     sample              29.62  0.8301  0.1839  5.47",
        "2        no-adv    no-adv   9f8e7d6  matlab      my.photos-1a2b3c4d  29.70  0.8359  0.1871  6.13",
        "3        -         -        0123456  -           -                       -       -       -     -",
        "4        -         -        fedcba9  ?           sample              28.10       -  0.2000     -",
        "?: tagged eval.<set>.<metric> by an evaluate stage older than convention-named tags",
    ]
    assert listed.err == ""


def test_registry_list_of_an_empty_store_and_outside_a_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    main(["registry", "list"])
    assert (
        capsys.readouterr().out
        == "srgan-generator: no version registered yet (the train stage registers one per run)\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(SystemExit):
        main(["registry", "list"])
    assert capsys.readouterr().err.startswith(f"error: no MLflow store here ({elsewhere / 'mlflow.db'} does not exist)")
    assert list(elsewhere.iterdir()) == []  # no store created


def closed_port() -> int:
    """A localhost port nothing listens on: bound by the system, then closed."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def refusal(server: str, model_uri: str | None) -> str:
    named = f"{model_uri}: " if model_uri else ""
    return (
        f"error: {named}{server}: the MLflow tracking server does not answer (Connection refused); "
        "check MLFLOW_TRACKING_URI (host, port, http or https) and that the server is up"
    )


def test_upscale_of_a_model_uri_on_a_server_that_does_not_answer_is_one_line_within_seconds(tmp_path: Path) -> None:
    """The real command, process start included."""
    Image.fromarray(np.full((12, 10, 3), 128, np.uint8)).save(tmp_path / "in.png")
    server = f"http://127.0.0.1:{closed_port()}"
    uri = "models:/srgan-generator/1"
    started = time.monotonic()
    result = run(
        [str(BIN / "srgan"), "upscale", "in.png", "-o", "out.png", "--model", uri],
        tmp_path,
        timeout=120,
        env={"MLFLOW_TRACKING_URI": server},
        check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 2 and elapsed < 15, (result.returncode, elapsed, result.stderr[-2000:])
    assert result.stderr.splitlines() == [refusal(server, uri)]
    assert result.stdout == ""
    assert sorted(path.name for path in tmp_path.iterdir()) == ["in.png"]  # nothing written, no store


@pytest.mark.parametrize(
    ("command", "model_uri"),
    [
        (["export", "--model", "runs:/0123456789abcdef/generator", "-o", "x.onnx"], "runs:/0123456789abcdef/generator"),
        (["eval", "--model", "models:/srgan-generator/1", "--data", "hr"], "models:/srgan-generator/1"),
        (["registry", "prune", "--keep", "1"], None),
        (["registry", "list"], None),
    ],
    ids=["export", "eval", "registry-prune", "registry-list"],
)
def test_every_other_command_that_reads_a_server_refuses_one_that_does_not_answer_in_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    model_uri: str | None,
) -> None:
    """In this process (the upscale test above times a whole command): the refusal comes from the
    server check, before MLflow is pointed anywhere."""
    (tmp_path / "hr").mkdir()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(tmp_path / "hr" / "a.png")
    server = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    started = time.monotonic()
    with pytest.raises(SystemExit) as exited:
        main(command)
    assert exited.value.code == 2 and time.monotonic() - started < 15
    shown = capsys.readouterr()
    assert shown.err.splitlines() == [refusal(server, model_uri)]
    assert shown.out == ""
    assert sorted(path.name for path in tmp_path.iterdir()) == ["hr"]  # nothing written, no store
