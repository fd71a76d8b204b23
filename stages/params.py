"""DVC stage `params`: check all of params.yaml before any other stage runs (path from dvc.yaml).

The other stages depend on the keys they read, so a key that none reads (a typo'd top-level key
such as `dvc exp run -S +sede=1`) would pass unnoticed and be recorded as an experiment. This
stage depends on the whole file; `download` depends on its stamp, so a bad params.yaml stops
`dvc repro` here, before any stage has removed its outs. The stamp's text never changes, so a
valid edit re-runs only the stages whose keys changed. The generator `pretrain.init` names is
loaded and checked against `model.*` here too, so a start that does not fit stops the run before
download. So does `runtime.device: cuda` where CUDA is not usable, with torch's reason (no
device, a driver too old for this torch's CUDA, a GPU architecture it has no kernels for). And
a tracking server (`$MLFLOW_TRACKING_URI`) that does not answer, or refuses the login, stops it
here in seconds, in one line, before a stage removes its outs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from srgan.core.atomic import write_text
from srgan.core.config import load_params
from srgan.core.errors import exit_on_error
from srgan.core.runtime import resolve_device
from srgan.models.checkpoint import params_config
from srgan.models.networks import check_architecture
from srgan.models.zoo import load_start
from srgan.tracking.remote import check_server, patience_s, tracking_uri


@exit_on_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stamp", type=Path, required=True, help="file written once params.yaml is valid")
    args = parser.parse_args()
    params = load_params()
    patience_s()  # a malformed $SRGAN_TRACKING_PATIENCE_S stops here, not hours into training
    check_server(tracking_uri())
    check_architecture(params.model.arch)
    if params.runtime.device == "cuda":  # auto and cpu need no GPU: no CUDA start-up here for them
        resolve_device("cuda")  # not usable: one line with torch's reason, before any out goes
    load_start(params.pretrain.init, params_config(params))  # a missing, damaged or misfit start stops here
    write_text(args.stamp, "params.yaml: every key known, every value valid\n")


if __name__ == "__main__":
    main()
