"""The `srgan` command: use a trained model outside the pipeline.

    srgan eval --model {bicubic,PATH} --data DIR [--scale 4] [--json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from srgan.checkpoint import load_generator
from srgan.config import PreprocessParams, RuntimeParams
from srgan.errors import SrganError, exit_on_error
from srgan.evaluate import bicubic, evaluate, generator_upscaler, pairs_from_hr_folder, to_json_line
from srgan.metrics import CONVENTIONS, DEFAULT_CONVENTION, convention
from srgan.runtime import resolve_runtime


def _runtime_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")


def cmd_eval(args: argparse.Namespace) -> None:
    """PSNR/SSIM/MSE of bicubic or a generator file on a folder of HR images."""
    rt = resolve_runtime(RuntimeParams(device=args.device, precision=args.precision))
    if args.model == "bicubic":
        scale = args.scale or 4
        upscaler = bicubic(scale)
    else:
        gen = load_generator(args.model)
        scale = gen.scale
        if args.scale and args.scale != scale:
            raise SrganError(f"{args.model}: a ×{scale} model, but --scale {args.scale} was asked for")
        upscaler = generator_upscaler(gen, rt)
    pairs = pairs_from_hr_folder(args.data, scale, PreprocessParams().max_pixels)
    scores, _ = evaluate(upscaler, pairs, convention(scale, args.convention))
    if args.json:
        print(to_json_line(args.model, scores))
    else:
        print(
            f"{args.model} on {args.data} ({scores.images} images, ×{scale}, {scores.convention} convention): "
            f"PSNR {scores.psnr:.2f} dB  SSIM {scores.ssim:.4f}  MSE {scores.mse:.2f}"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="srgan", description="SRGAN super-resolution: evaluate and upscale.")
    commands = parser.add_subparsers(dest="command", required=True)
    ev = commands.add_parser("eval", help="measure a model on a folder of HR images")
    ev.add_argument("--model", required=True, help="'bicubic' or a generator file (models/srgan.pt)")
    ev.add_argument("--data", type=Path, required=True, help="folder of HR images")
    ev.add_argument("--scale", type=int, choices=[2, 4, 8], default=None, help="upscaling factor (default: the model's, 4 for bicubic)")
    ev.add_argument("--convention", choices=CONVENTIONS, default=DEFAULT_CONVENTION, help=f"metric convention (default: {DEFAULT_CONVENTION})")
    ev.add_argument("--json", action="store_true", help="print one flat JSON object")
    _runtime_options(ev)
    ev.set_defaults(func=cmd_eval)
    return parser


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)
