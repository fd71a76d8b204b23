"""DVC stage `evaluate`: bicubic, SRResNet and SRGAN on every data.eval set → reports/ and MLflow."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from srgan.core.atomic import write_text
from srgan.core.config import flatten, load_params
from srgan.core.errors import exit_on_error
from srgan.core.runtime import resolve_runtime
from srgan.evaluation.evaluate import run_evaluation
from srgan.tracking.runs import stage_run


@exit_on_error
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="preprocessed data folder (holds eval/<set>/)")
    parser.add_argument("--srresnet", type=Path, required=True, help="SRResNet generator file")
    parser.add_argument("--srgan", type=Path, required=True, help="SRGAN generator file")
    parser.add_argument("--reports", type=Path, required=True, help="reports folder to write")
    parser.add_argument("--logged", type=Path, required=True, help="stamp written once MLflow holds the table")
    args = parser.parse_args()
    params = load_params()
    rt = resolve_runtime(params.runtime)
    if rt.device.type == "cuda" and params.runtime.precision == "auto":
        # The reported numbers at full precision: a GPU evaluates in fp32 in seconds.
        rt = dataclasses.replace(rt, precision="fp32")
    run_params = {**flatten(params), **rt.describe(), "metric_convention": params.evaluate.convention}
    with stage_run("evaluate", run_params) as tracker:
        run_evaluation(params, rt, args.data, args.srresnet, args.srgan, args.reports, tracker)
    write_text(args.logged, "this workspace's MLflow store holds the evaluate run of these reports\n")


if __name__ == "__main__":
    main()
