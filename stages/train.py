"""DVC stage `train`: SRGAN from the pretrained SRResNet → models/srgan.pt and the discriminator."""

from __future__ import annotations

import argparse
from pathlib import Path

from srgan.core.config import load_params
from srgan.core.errors import exit_on_error
from srgan.tracking.remote import check_server, tracking_uri
from srgan.tracking.runs import stage_run
from srgan.training import distributed
from srgan.training.jobs import train_gan


@exit_on_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="preprocessed shards folder")
    parser.add_argument("--init", type=Path, required=True, help="pretrained SRResNet generator file")
    parser.add_argument("--out", type=Path, required=True, help="SRGAN generator file to write")
    parser.add_argument("--discriminator", type=Path, required=True, help="discriminator file to write")
    parser.add_argument("--curves", type=Path, required=True, help="training curves CSV to write")
    args = parser.parse_args()
    params = load_params()
    check_server(tracking_uri())  # a server that is down or refuses the login: one line, before any work
    distributed.relaunch(params.runtime.nproc, "stages.train")
    job = train_gan(params, args.data, args.init, args.out, args.discriminator, args.curves)
    with stage_run("train", job.run_params, job.lead, job.resume_run_id, system_metrics=True) as tracker:
        job.run(tracker)
    distributed.teardown()


if __name__ == "__main__":
    main()
