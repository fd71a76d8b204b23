"""`pretrain.init`: where the SRResNet phase starts. `none` (from scratch), a released generator
(its sha256 checked), a generator file, or an MLflow `models:/…` / `runs:/…` URI; one that does not
fit `model.*` stops the run at the params check, before any out is removed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import Reproduced
from mlflow.tracking import MlflowClient
from project import out_hashes, run
from tiny_stage import TINY_PARAMS, write_tiny_project

from srgan.core.config import Params, parse_params
from srgan.core.errors import SrganError
from srgan.models import zoo
from srgan.models.checkpoint import generator_config, load_generator, params_config, save_generator
from srgan.models.networks import Generator
from srgan.tracking.runs import stage_run
from srgan.training.jobs import pretrain

TINY = generator_config(4, 1, 8, True)  # tiny_stage's model: 1 block × 8 channels
PATHS = (Path("data/prepared"), Path("g.pt"), Path("c.csv"))  # in the tiny project, the working directory


def tiny_params(init: str, steps: int = 2, upsampler: str = "pixelshuffle") -> Params:
    raw = yaml.safe_load(TINY_PARAMS.replace("STEPS", str(steps)))
    raw["pretrain"]["init"], raw["model"]["upsampler"] = init, upsampler
    return parse_params(raw)


def weights_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def test_none_is_from_scratch_and_the_default_is_the_released_srresnet() -> None:
    assert zoo.load_start("none", TINY) is None
    start = zoo.load_start(Params().pretrain.init, params_config(Params()))
    entry = zoo.RELEASED["srresnet-t91bsd200"]
    assert start is not None and start.file == zoo.WEIGHTS_DIR / entry.file
    assert start.sha256 == entry.sha256
    assert start.tags == {"init.spec": "srresnet-t91bsd200", "init.sha256": entry.sha256}


def test_a_damaged_released_srresnet_is_refused_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = zoo.RELEASED["srresnet-t91bsd200"]
    data = bytearray((zoo.WEIGHTS_DIR / entry.file).read_bytes())
    data[len(data) // 2] ^= 1  # one bit of one weight
    (tmp_path / entry.file).write_bytes(bytes(data))
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(SrganError, match=r"^params: pretrain.init=srresnet-t91bsd200: .*sha256 .* is not the released"):
        zoo.load_start("srresnet-t91bsd200", params_config(Params()))


def test_pretrain_starts_from_a_generator_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    write_tiny_project(tmp_path)
    torch.manual_seed(5)
    start = Generator(scale=4, blocks=1, channels=8, bicubic_skip=True)
    save_generator(tmp_path / "start.pt", start, TINY)
    job = pretrain(
        tiny_params(str(tmp_path / "start.pt")), tmp_path / "data" / "prepared", tmp_path / "g.pt", tmp_path / "c.csv"
    )
    assert weights_equal(job.stage.generator, start)
    assert job.stage.tags["init.spec"] == str(tmp_path / "start.pt")
    assert job.stage.models_in == {"init": tmp_path / "start.pt"}  # lineage to the run that wrote it, if any
    # 0 steps: the start as it is, validated and written as the SRResNet.
    job = pretrain(tiny_params(str(tmp_path / "start.pt"), steps=0), *PATHS)
    with stage_run("pretrain", job.run_params, enabled=False) as tracker:
        job.run(tracker)
    assert weights_equal(load_generator(tmp_path / "g.pt"), start)
    assert set(job.state.validation) == {"val_psnr", "val_lpips"}
    # From scratch the generator is the seed's own (ICNR) init, not the file's.
    scratch = pretrain(tiny_params("none"), *PATHS)
    assert not weights_equal(scratch.stage.generator, start) and scratch.stage.tags == {"init.spec": "none"}

    # A sub-pixel start for a nearest generator gives it its body: every weight outside the ×2
    # stages' convs (their PReLUs sit at the same indices); those convs keep the seed's init.
    nearest = pretrain(tiny_params(str(tmp_path / "start.pt"), upsampler="nearest"), *PATHS)
    gen, old = nearest.stage.generator.state_dict(), start.state_dict()
    assert nearest.stage.tags["init.upsampler"] == "pixelshuffle (its upsampler not carried over)"
    fresh = {"upsample.1.weight", "upsample.1.bias", "upsample.4.weight", "upsample.4.bias"}
    assert set(gen) - set(old) == fresh and all(gen[k].shape == (8, 8, 3, 3) for k in fresh if "weight" in k)
    assert all(torch.equal(gen[k].cpu(), old[k]) for k in set(gen) - fresh)
    # The same start for a generator of other blocks is still refused.
    with pytest.raises(SrganError, match="holds arch=srresnet, scale=4, blocks=1"):
        zoo.load_start(str(tmp_path / "start.pt"), generator_config(4, 2, 8, True, upsampler="nearest"))


@pytest.mark.parametrize(
    "config", [generator_config(4, 2, 8, True), generator_config(2, 1, 8, True), generator_config(4, 1, 8, False)]
)
def test_a_start_of_another_shape_is_refused_naming_both(tmp_path: Path, config: dict) -> None:
    save_generator(tmp_path / "other.pt", Generator(**{k: v for k, v in config.items() if k != "arch"}), config)
    with pytest.raises(SrganError) as refused:
        zoo.load_start(str(tmp_path / "other.pt"), TINY)
    skip = str(config["bicubic_skip"]).lower()
    found = f"scale={config['scale']}, blocks={config['blocks']}, channels=8, bicubic_skip={skip}"
    assert str(refused.value) == (
        f"params: pretrain.init={tmp_path / 'other.pt'}: holds arch=srresnet, {found}, upsampler=pixelshuffle, "
        "but model.* asks for arch=srresnet, scale=4, blocks=1, channels=8, bicubic_skip=true, upsampler=pixelshuffle"
    )


def test_zero_steps_need_a_start() -> None:
    with pytest.raises(SrganError, match=r"^params: pretrain.steps=0 keeps the start as it is, but pretrain.init=none"):
        parse_params({"pretrain": {"init": "none", "steps": 0}})
    assert parse_params({"pretrain": {"steps": 0}}).pretrain.init == "srresnet-t91bsd200"


def test_a_missing_start_is_named() -> None:
    with pytest.raises(SrganError, match=r"^params: pretrain.init=missing.pt: missing.pt: file not found$"):
        zoo.load_start("missing.pt", TINY)


@pytest.mark.e2e
@pytest.mark.xdist_group("reproduced")
def test_a_misfit_start_stops_dvc_repro_before_any_out_is_removed(reproduced: Reproduced, tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(reproduced.pristine, project, symlinks=True)
    save_generator(  # the reproduced project's upsampler (nearest), twice its channels
        tmp_path / "wide.pt",
        Generator(scale=4, blocks=1, channels=16, bicubic_skip=True, upsampler="nearest"),
        generator_config(4, 1, 16, True, upsampler="nearest"),
    )
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["pretrain"]["init"] = str(tmp_path / "wide.pt")
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    before = {path: (project / path).read_bytes() for path in ("models/srresnet.pt", "models/srgan.pt")}
    failed = run(["dvc", "repro"], project, check=False)
    assert failed.returncode != 0
    assert (
        f"error: params: pretrain.init={tmp_path / 'wide.pt'}: holds arch=srresnet, scale=4, blocks=1, channels=16, "
        "bicubic_skip=true, upsampler=nearest, but model.* asks for arch=srresnet, scale=4, blocks=1, "
        "channels=8, bicubic_skip=true, upsampler=nearest"
    ) in failed.stderr + failed.stdout
    assert "Running stage 'download'" not in failed.stdout + failed.stderr
    assert {path: (project / path).read_bytes() for path in before} == before
    assert out_hashes(project) == reproduced.hashes


@pytest.mark.e2e
@pytest.mark.xdist_group("reproduced")
def test_pretrain_starts_from_a_registered_model_and_records_its_run(
    reproduced: Reproduced, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = f"sqlite:///{reproduced.project / 'mlflow.db'}"
    client = MlflowClient(store)
    version = min(client.search_model_versions("name = 'srgan-generator'"), key=lambda v: int(v.version))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    write_tiny_project(tmp_path)
    config = generator_config(4, 1, 8, True, upsampler="nearest")  # the reproduced project's generator
    for uri in (f"models:/srgan-generator/{version.version}", f"runs:/{version.run_id}/generator"):
        start = zoo.load_start(uri, config)
        assert start is not None and start.file is None
        assert start.tags["lineage.init_run_id"] == version.run_id
        assert start.tags["init.sha256"] == zoo.load_start(uri, config).sha256  # the weights' digest is stable
    job = pretrain(tiny_params(uri, upsampler="nearest"), *PATHS)
    assert weights_equal(job.stage.generator, zoo.load_model(uri))
    assert job.stage.tags["lineage.init_run_id"] == version.run_id
    registered = f"models:/srgan-generator/{version.version}"
    with pytest.raises(
        SrganError, match=rf"^params: pretrain.init={registered}: holds a Generator of other shapes, but"
    ):
        zoo.load_start(registered, generator_config(4, 2, 8, True, upsampler="nearest"))
