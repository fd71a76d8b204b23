"""Fixtures for every test: each `pytest -n` worker's part of the cores, the CPU share a test
took given back, and the tiny pipeline that the end-to-end tests share, built and reproduced once
per pytest session.

A test that runs a stage or a command in this process claims a part of the cores
(`srgan.core.threads`) for the process's life: every stage started later by a subprocess would
count pytest as a computing job and run on half the cores. `give_back_the_cores` releases it,
and puts torch's thread pool back to its size before the test.

`dvc repro` of the five stages costs most of a minute on 2 cores; the tests that only need a
reproduced project (its outs, its MLflow runs, a baseline for experiments) or an uninterrupted
reference (out hashes, metrics bytes, how long each stage lives) take it from here instead of
paying for their own. That project trains on realistically degraded LR with a nearest-neighbour
upsampler (the released real-photo recipe); the team server's project on the defaults.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from project import TINY, make_project, out_hashes, run, stage_lifetimes, tiny_images
from team import Team, start_team

from srgan.core import threads


def pytest_configure(config: pytest.Config) -> None:
    """Under `pytest -n`, each worker computes on its part of the cores: two workers that each
    spin a full-size OpenMP pool on 2 cores starve each other (a 19-s metrics test took 88 s)."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        torch.set_num_threads(max(1, threads.cores() // int(workers)))


@pytest.fixture(autouse=True)
def give_back_the_cores() -> Iterator[None]:
    pool = torch.get_num_threads()
    yield
    threads.release()
    torch.set_num_threads(pool)  # a test's `runtime.threads` does not carry over to the next


@dataclass(frozen=True)
class Reproduced:
    """A tiny project after one uninterrupted `dvc repro`, and what it held then.

    `project` is shared: the tests of `test_pipeline_e2e.py` run experiments in it, so later
    readers must take the reference from the other fields, recorded before any test ran.
    `pristine` is a copy taken at that moment (git, DVC cache and outs; no MLflow store, whose
    artifact locations are absolute paths into `project`), for tests that need their own."""

    project: Path
    pristine: Path
    params: dict[str, object]
    lifetimes: dict[str, float]  # seconds each stage's process lived
    hashes: dict[str, str]  # out path -> md5, from dvc.lock
    metrics: bytes  # reports/metrics.json


@pytest.fixture(scope="session")
def reproduced(tmp_path_factory: pytest.TempPathFactory) -> Reproduced:
    root = tmp_path_factory.mktemp("reproduced")
    # The released real-photo recipe's options (the served project keeps the defaults): the faults
    # test then proves a realistic-degradation `dvc repro` byte-reproducible, and the e2e tests a
    # nearest-upsampler generator trained, evaluated, registered and upscaled with.
    params = {
        **TINY,
        "data": tiny_images(root),
        "preprocess": {**TINY["preprocess"], "degradation": "realistic"},
        "model": {**TINY["model"], "upsampler": "nearest"},
    }
    project = make_project(root, params)
    lifetimes = stage_lifetimes(project)
    pristine = root / "pristine"
    shutil.copytree(project, pristine, symlinks=True, ignore=shutil.ignore_patterns("mlflow.db", "mlruns", "tmp"))
    return Reproduced(
        project=project,
        pristine=pristine,
        params=params,
        lifetimes=lifetimes,
        hashes=out_hashes(project),
        metrics=(project / "reports" / "metrics.json").read_bytes(),
    )


@dataclass(frozen=True)
class Served:
    """A tiny project reproduced by user alice against a team tracking server (`srgan server`:
    PostgreSQL, MLflow with basic-auth), which stays up for the tests of the "served" group."""

    team: Team
    project: Path
    commit: str  # the project's HEAD when the stages ran
    seconds: float  # the `dvc repro` alone


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("served")
    team = start_team(root)
    try:
        project = make_project(root, {**TINY, "data": tiny_images(root)})
        began = time.monotonic()
        run(["dvc", "repro"], project, env=team.env("alice"))
        seconds = time.monotonic() - began
        yield Served(team, project, run(["git", "rev-parse", "HEAD"], project).stdout.strip(), seconds)
    finally:
        team.stop()
    assert not team.postgres_processes(), "Ctrl-C of srgan server left PostgreSQL running"
