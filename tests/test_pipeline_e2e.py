"""The whole pipeline through the real DVC CLI, in a temporary git repository, with tiny params.

These are slow tests (`make test-fast` skips them): `dvc repro` of all five stages (the session's
shared run, conftest.py) and `dvc exp run` variants in it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import Reproduced
from mlflow.tracking import MlflowClient
from PIL import Image
from project import BIN, REPO, TINY, in_terminal, mlflow_runs, run

from srgan.core.runtime import cuda_problem
from srgan.data.imresize import imresize_uint8
from srgan.evaluation.scores import METRICS
from srgan.models.checkpoint import load_generator

# One worker of `pytest -n` runs every test that shares the session's reproduced project.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("reproduced")]


@pytest.fixture(scope="module")
def pipeline(reproduced: Reproduced) -> Path:
    """The session's reproduced tiny project (conftest.py); these tests run experiments in it."""
    return reproduced.project


def test_dvc_repro_builds_every_stage_and_reports(pipeline: Path) -> None:
    status = run(["dvc", "status"], pipeline)
    assert "up to date" in status.stdout
    metrics = json.loads((pipeline / "reports" / "metrics.json").read_text())
    (eval_set,) = metrics
    assert eval_set.startswith("eval_images-")
    assert set(metrics[eval_set]) == {"bicubic", "srresnet", "srgan", "hr"}
    assert set(metrics[eval_set]["hr"]) == {"niqe"} and 0 < metrics[eval_set]["hr"]["niqe"] < 100
    for model in ("bicubic", "srresnet", "srgan"):
        scores = metrics[eval_set][model]
        assert set(scores) == {"psnr", "ssim", "mse", "lpips", "niqe"}
        # NIQE has no upper bound: a barely trained tiny model's outputs score in the hundreds.
        assert 5 < scores["psnr"] < 60 and 0 < scores["ssim"] <= 1 and 0 < scores["niqe"] < math.inf
        assert 0 < scores["lpips"] < 1.5
    results = (pipeline / "reports" / "results.md").read_text()
    for row in ("| MSE ↓ |", "| PSNR (dB) ↑ |", "| SSIM ↑ |", "| LPIPS ↓ |", "| NIQE ↓ |"):
        assert row in results
    assert "matlab" in results and "SRGAN content loss vgg_multi, features after the ReLU, on Oxford VGG19" in results
    assert "figures/perception_distortion.png" in results
    figures = {path.name for path in (pipeline / "reports" / "figures").glob("*.png")}
    assert len(figures) == 2 and "perception_distortion.png" in figures
    assert (pipeline / "reports" / "plots" / "train.csv").read_text().startswith("step,g_content")
    # The per-image table: one row per image and model (HR with its NIQE alone); its means are metrics.json's.
    table = pd.read_csv(pipeline / "reports" / "scores.csv")
    assert list(table.columns) == ["set", "image", "model", "mse", "psnr", "ssim", "lpips", "niqe"]
    assert sorted(table["model"].unique()) == ["bicubic", "hr", "srgan", "srresnet"]
    for (set_name, model), rows in table.groupby(["set", "model"]):
        expected = metrics[set_name][model]
        assert len(rows) == len(table[table["model"] == "hr"]), model
        for key, value in expected.items():
            assert rows[key].mean() == pytest.approx(value, abs=1e-3), (model, key)
    # The recipe of the released real-photo model (conftest.py): a nearest-neighbour upsampler,
    # trained on LR patches that the seeded chain degraded, about one in six left clean.
    for name in ("srresnet", "srgan"):
        gen = load_generator(pipeline / "models" / f"{name}.pt")
        assert gen.upsampler == "nearest" and not any(isinstance(m, torch.nn.PixelShuffle) for m in gen.modules())
    assert "model.upsampler=nearest" in results and "preprocess.degradation=realistic" in results
    hr, lr = (np.load(pipeline / "data" / "prepared" / "train" / f"{kind}_00000.npy") for kind in ("hr", "lr"))
    degraded = (lr != np.stack([imresize_uint8(patch, 1 / 4) for patch in hr])).any(axis=(1, 2, 3))
    assert len(degraded) == 36 and 0.5 < degraded.mean() < 0.97, degraded.mean()
    lock = (pipeline / "dvc.lock").read_text()
    assert all(f"  {stage}:" in lock for stage in ("download", "preprocess", "pretrain", "train", "evaluate"))
    stages = {run_.data.tags["stage"] for run_ in mlflow_runs(pipeline)}
    assert stages == {"download", "preprocess", "pretrain", "train", "evaluate"}


def test_exp_run_reruns_only_train_and_evaluate_and_the_readmes_exp_show_shows_it(pipeline: Path) -> None:
    # The baseline's results committed, as the repository ships them (dvc.lock, reports/), measured
    # on another CPU type: there SRResNet's scores differ in the last digit `dvc exp show` shows
    # (5 significant digits), as bf16 kernels differ.
    metrics_path = pipeline / "reports" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    (eval_set,) = metrics
    metrics[eval_set]["srresnet"]["lpips"] += 1e-4
    metrics[eval_set]["srresnet"]["niqe"] += 1e-3
    metrics_path.write_text(json.dumps(metrics, indent=2))
    run(["git", "add", "-A"], pipeline)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline"], pipeline)
    before = {r.info.run_id for r in mlflow_runs(pipeline)}
    (exp_run, exp_show) = readme_block("Variants and comparisons")
    assert exp_run == "dvc exp run -n no-adv -S train.adv_weight=0" and exp_show.startswith("dvc exp show")
    out = run(["bash", "-c", exp_run], pipeline)
    log = out.stdout + out.stderr
    assert "Running stage 'train'" in log and "Running stage 'evaluate'" in log
    for stage in ("download", "preprocess", "pretrain"):
        assert f"Running stage '{stage}'" not in log
    new = [r for r in mlflow_runs(pipeline) if r.info.run_id not in before]
    assert sorted(r.data.tags["stage"] for r in new) == ["evaluate", "train"]
    assert {r.data.tags["dvc_exp"] for r in new} == {"no-adv"}
    assert {r.data.params["train.adv_weight"] for r in new} == {"0.0"}

    # The README's `dvc exp show` fits the variant's row, uncut, in a 120-column terminal, despite
    # the noise-level difference. Its three metric columns are named `<set>.srgan.<metric>`: this
    # project's set name is longer than the default's `sample`, and the terminal here is wider by
    # what that adds.
    columns = 120 + 3 * (len(eval_set) - len("sample"))
    shown = in_terminal(exp_show, pipeline, columns)
    lines = shown.splitlines()
    assert max(map(len, lines)) <= columns and "…" not in shown, shown
    header = next(line for line in lines if "Experiment" in line).split()
    assert header == ["Experiment", *(f"{eval_set}.srgan.{m}" for m in ("lpips", "niqe", "psnr")), "train.adv_weight"]
    (row,) = [line.split() for line in lines if "[no-adv]" in line]
    assert row[-1] == "0" and all(float(value) > 0 for value in row[-4:-1]), row


def test_after_a_successful_experiment_the_readmes_exp_apply_undoes_a_failed_one(pipeline: Path) -> None:
    """`no-adv`'s results are in the workspace (dvc exp run applied them) when the next experiment
    fails. `git checkout -- params.yaml` would leave no-adv's dvc.lock: dvc status showed params,
    train and evaluate changed, and dvc repro retrained. The README's block for this case ends up
    to date, with no-adv's params, models and metrics."""
    outs = {p: (pipeline / p).read_bytes() for p in ("models/srgan.pt", "reports/metrics.json", "dvc.lock")}
    failed = run(["dvc", "exp", "run", "-S", "train.adv_weight=-1"], pipeline, check=False)
    assert failed.returncode != 0
    assert "error: params: train.adv_weight=-1 must be >= 0" in failed.stdout + failed.stderr
    for command in readme_block("succeeded before it**"):
        result = run(["bash", "-c", command], pipeline)
    assert "Data and pipelines are up to date." in result.stdout
    assert yaml.safe_load((pipeline / "params.yaml").read_text())["train"]["adv_weight"] == 0
    assert {p: (pipeline / p).read_bytes() for p in outs} == outs
    # The tests below start from a committed run, as a user who committed theirs would.
    run(["git", "add", "-A"], pipeline)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "no-adv"], pipeline)


def test_evaluate_train_and_pretrain_are_linked_and_the_generator_is_registered(pipeline: Path, tmp_path: Path) -> None:
    """Lineage by tags, the data each run saw, and the registered SRGAN generator, usable by URI."""
    workspace = {r.data.tags["stage"]: r for r in mlflow_runs(pipeline) if not r.data.tags.get("dvc_exp")}
    pretrain, train, evaluate = (workspace[stage] for stage in ("pretrain", "train", "evaluate"))
    assert evaluate.data.tags["lineage.srgan_run_id"] == train.info.run_id
    assert evaluate.data.tags["lineage.srresnet_run_id"] == pretrain.info.run_id
    assert train.data.tags["lineage.srresnet_run_id"] == pretrain.info.run_id

    lock = yaml.safe_load((pipeline / "dvc.lock").read_text())
    md5 = next(out["md5"] for out in lock["stages"]["preprocess"]["outs"] if out["path"] == "data/prepared")
    client = MlflowClient(f"sqlite:///{pipeline / 'mlflow.db'}")
    for stage, run_ in (("pretrain", pretrain), ("train", train), ("evaluate", evaluate)):
        inputs = client.get_run(run_.info.run_id).inputs.dataset_inputs
        assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [("prepared", md5)], stage

    (version,) = client.search_model_versions(f"run_id = '{train.info.run_id}'")
    assert version.name == "srgan-generator"
    # The version is the image model (encoded images in, PNG out); the run also holds the tensor model.
    logged = {
        model.name: model
        for model in client.search_logged_models([train.info.experiment_id])
        if model.source_run_id == train.info.run_id
    }
    assert version.source == f"models:/{logged['upscaler'].model_id}" and set(logged) == {"upscaler", "generator"}
    assert version.tags["git_commit"] == train.data.tags["git_commit"] and version.tags["dvc_exp"] == ""
    # The scores of the evaluate run that measured this version (the workspace's metrics.json may
    # already hold a later experiment's).
    scores = {key: value for key, value in evaluate.data.metrics.items() if ".srgan." in key}
    assert len(scores) == len(METRICS)  # every metric of the table
    for key, value in scores.items():
        set_name, _, metric = key.split(".")
        tag = f"eval.matlab.{set_name}.{metric}"  # the convention named: params.yaml's default, matlab
        assert float(version.tags[tag]) == pytest.approx(value, abs=1e-9), key

    Image.fromarray(np.full((12, 10, 3), 128, np.uint8)).save(tmp_path / "in.png")
    uri = f"models:/srgan-generator/{version.version}"
    run(
        [str(BIN / "srgan"), "upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--model", uri],
        pipeline,
    )
    assert Image.open(tmp_path / "out.png").size == (40, 48)


def test_evaluate_only_experiments_convention_and_figures(pipeline: Path, tmp_path: Path) -> None:
    """Two experiments that re-run only evaluate. `evaluate.convention=basicsr` names the
    convention in results.md and measures bicubic on LR made in float (so its numbers move).
    `evaluate.figure_crop` changes the figures, which are DVC image plots: `dvc plots diff` of
    the two experiments renders each experiment's own images in one page."""
    matlab = json.loads((pipeline / "reports" / "metrics.json").read_text())
    crops = {"basicsr": TINY["evaluate"]["figure_crop"], "crop-a": 24}
    for name, setting in (("basicsr", "evaluate.convention=basicsr"), ("crop-a", "evaluate.figure_crop=24")):
        out = run(["dvc", "exp", "run", "-n", name, "-S", setting], pipeline)
        log = out.stdout + out.stderr
        assert "Running stage 'evaluate'" in log and "Running stage 'train'" not in log, name
    refs = run(["git", "for-each-ref", "refs/exps", "--format=%(refname)"], pipeline).stdout.split()
    (ref,) = [r for r in refs if r.endswith("/basicsr")]
    results = run(["git", "show", f"{ref}:reports/results.md"], pipeline).stdout
    basicsr = json.loads(run(["git", "show", f"{ref}:reports/metrics.json"], pipeline).stdout)
    assert "Metric convention: basicsr: BT.601 Y unrounded" in results
    (eval_set,) = matlab
    assert basicsr[eval_set]["bicubic"]["psnr"] != matlab[eval_set]["bicubic"]["psnr"]
    assert basicsr[eval_set]["hr"] == matlab[eval_set]["hr"]  # HR's NIQE does not depend on it

    # The registered SRGAN both evaluations measured holds both sets of tags, each named by its
    # convention: the basicsr re-evaluation added its numbers instead of overwriting matlab's.
    (measured,) = {
        r.data.tags["lineage.srgan_run_id"]
        for r in mlflow_runs(pipeline)
        if r.data.tags["stage"] == "evaluate" and r.data.tags.get("dvc_exp") == "basicsr"
    }
    (version,) = MlflowClient(f"sqlite:///{pipeline / 'mlflow.db'}").search_model_versions(f"run_id = '{measured}'")
    tagged = {
        conv: {m: float(version.tags[f"eval.{conv}.{eval_set}.{m}"]) for m in scores[eval_set]["srgan"]}
        for conv, scores in (("matlab", matlab), ("basicsr", basicsr))
    }
    assert tagged == {"matlab": matlab[eval_set]["srgan"], "basicsr": basicsr[eval_set]["srgan"]}
    assert tagged["matlab"]["psnr"] != tagged["basicsr"]["psnr"]  # Y rounded or not moves PSNR whatever the LR
    assert not any(key.startswith(f"eval.{eval_set}.") for key in version.tags)  # no tag without its convention
    listed = run([str(BIN / "srgan"), "registry", "list"], pipeline).stdout.splitlines()
    assert listed[0].split() == "version aliases dvc_exp commit convention set PSNR SSIM LPIPS NIQE".split()
    rows = {row[4]: row[5:] for row in map(str.split, listed[1:]) if row[0] == str(version.version)}
    decimals = {"psnr": 2, "ssim": 4, "lpips": 4, "niqe": 2}
    assert rows == {conv: [eval_set, *(f"{tagged[conv][m]:.{d}f}" for m, d in decimals.items())] for conv in tagged}

    out = tmp_path / "plots"
    run(["dvc", "plots", "diff", *crops, "-o", str(out)], pipeline)
    html = (out / "index.html").read_text()
    sizes = {}
    for name in crops:
        images = [p for p in (out / "static").glob("*.png") if name in p.name and "figures" in p.name]
        assert len(images) == 2, (name, sorted(p.name for p in (out / "static").glob("*")))
        assert all(f"static/{p.name}" in html for p in images)
        figure = next(p for p in images if "perception_distortion" not in p.name)
        sizes[name] = Image.open(figure).size
    assert sizes["basicsr"] != sizes["crop-a"]  # each experiment's own figure, not one image twice


def readme_block(after: str) -> list[str]:
    """The commands of the README's first ```bash block after the line containing `after`."""
    text = (REPO / "README.md").read_text()
    block = text[text.index(after) :].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("setting", "error", "edit"),
    [
        ("+sede=1", "error: params: unknown key sede;", "sede"),
        ("+train.adv_wieght=1e-3", "error: params: unknown key train.adv_wieght;", "adv_wieght"),
        pytest.param(
            "runtime.device=cuda",
            "error: runtime.device=cuda, but CUDA is not usable here: ",
            "device: cuda",
            marks=pytest.mark.skipif(not cuda_problem(), reason="this machine has a usable GPU"),
        ),
    ],
)
def test_a_bad_setting_in_exp_run_is_refused_before_any_out_is_touched_and_the_readme_recovers(
    pipeline: Path, setting: str, error: str, edit: str
) -> None:
    """`-S +key` adds a key: at top level no stage reads it (it used to pass and be recorded as an
    experiment); inside a section the train stage used to remove its outs before refusing it. A
    GPU asked for where CUDA is not usable stops there too, with torch's reason, instead of at
    pretrain with its outs gone. The README's recovery block is followed as a user would after
    `make repro`: their results (dvc.lock, reports/) are their own, not committed; the block ends
    up to date and keeps them."""
    # No experiment succeeded since the last commit (the README's other block is for that case):
    # the earlier tests' last experiment, committed.
    run(["git", "add", "-A"], pipeline)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "crop-a", "--allow-empty"], pipeline)
    outs = {path: (pipeline / path).read_bytes() for path in ("models/srgan.pt", "reports/plots/train.csv")}
    failed = run(["dvc", "exp", "run", "-S", setting], pipeline, check=False)
    log = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert [line for line in log.splitlines() if line.startswith("error: ")] == [
        next(line for line in log.splitlines() if line.startswith(error))
    ]  # one line
    assert "Running stage 'params'" in log and "Running stage 'train'" not in log
    assert {path: (pipeline / path).read_bytes() for path in outs} == outs
    assert edit in (pipeline / "params.yaml").read_text()  # DVC keeps the -S edit

    for command in readme_block("**When `dvc exp run` fails**"):
        result = run(["bash", "-c", command], pipeline)
    assert "Data and pipelines are up to date." in result.stdout
    assert edit not in (pipeline / "params.yaml").read_text()
    assert {path: (pipeline / path).read_bytes() for path in outs} == outs
    # The tests below start from a committed run, as a user who committed theirs would.
    run(["git", "add", "-A"], pipeline)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a good run", "--allow-empty"], pipeline)
