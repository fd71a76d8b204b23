"""DVC stage `pretrain`: SRResNet on pixel MSE → models/srresnet.pt (paths from dvc.yaml)."""

from __future__ import annotations

import argparse
from pathlib import Path

from srgan.core.config import load_params
from srgan.core.errors import exit_on_error
from srgan.tracking.remote import check_server, tracking_uri
from srgan.tracking.runs import stage_run
from srgan.training import distributed
from srgan.training.jobs import pretrain


@exit_on_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="preprocessed shards folder")
    parser.add_argument("--out", type=Path, required=True, help="generator file to write")
    parser.add_argument("--curves", type=Path, required=True, help="training curves CSV to write")
    args = parser.parse_args()
    params = load_params()
    check_server(tracking_uri())  # a server that is down or refuses the login: one line, before any work
    distributed.relaunch(params.runtime.nproc, "stages.pretrain")
    job = pretrain(params, args.data, args.out, args.curves)
    with stage_run("pretrain", job.run_params, job.lead, job.resume_run_id, system_metrics=True) as tracker:
        job.run(tracker)
    distributed.teardown()


if __name__ == "__main__":
    main()
