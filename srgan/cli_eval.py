"""`srgan eval`: every metric of bicubic or a generator on a folder of HR images (its LR made, and
degraded with `--degrade`, as the evaluate stage makes a set's), or NIQE alone on LR photos. Part
of the `srgan` command (`srgan.cli` adds it), kept in its own module so each stays one concern
under the house's 330 lines; torch loads only when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from srgan.core.config import PreprocessParams, RuntimeParams
from srgan.core.errors import SrganError
from srgan.core.metrics import CONVENTIONS, DEFAULT_CONVENTION, convention


def add_eval(commands: argparse._SubParsersAction) -> None:
    """Add `srgan eval` to the `srgan` command's parser (`srgan.cli.build_parser`)."""
    from srgan.cli import MODEL_HELP, _runtime_options  # srgan.cli is loaded by now

    ev = commands.add_parser("eval", help="measure a model on a folder of HR images (or of LR photos: --no-reference)")
    ev.add_argument("--model", required=True, help=f"'bicubic', {MODEL_HELP}")
    ev.add_argument("--data", type=Path, required=True, help="folder of HR images (LR photos with --no-reference)")
    ev.add_argument(
        "--no-reference",
        action="store_true",
        help="the folder holds low-resolution photos without HR: upscale them and report NIQE only",
    )
    ev.add_argument(
        "--degrade",
        type=_degradation,
        default=None,
        metavar="NAME",
        help="degrade each LR input after the downscale: jpeg<Q>, noise<S>, crf<C> (an H.264 frame) or realistic "
        "(the training chain), as the evaluate stage does for a `data.eval` entry `<set>@NAME`",
    )
    ev.add_argument(
        "--scale",
        type=int,
        choices=[2, 4, 8],
        default=None,
        help="upscaling factor (default: the model's, 4 for bicubic)",
    )
    ev.add_argument(
        "--convention",
        choices=CONVENTIONS,
        default=DEFAULT_CONVENTION,
        help=f"metric convention (default: {DEFAULT_CONVENTION})",
    )
    ev.add_argument("--json", action="store_true", help="print one flat JSON object")
    _runtime_options(ev)
    ev.set_defaults(func=cmd_eval)


def _degradation(text: str) -> str:
    from srgan.data.degrade import check_degradation

    try:
        check_degradation(text, "--degrade")
    except SrganError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("--degrade: ")) from None
    return text


def cmd_eval(args: argparse.Namespace) -> None:
    """Every metric (MSE, PSNR, SSIM, LPIPS, NIQE) of bicubic or a generator file on a folder of HR images; with
    `--no-reference`, the NIQE of its upscaled outputs of a folder of LR photos."""
    from srgan.cli import _count
    from srgan.core.runtime import resolve_runtime
    from srgan.evaluation.evaluate import bicubic, evaluate, generator_upscaler, no_reference_scores
    from srgan.evaluation.folders import json_line, pairs_from_hr_folder, read_folder, to_json_line
    from srgan.evaluation.scores import METRICS, NO_REFERENCE, Scores, average
    from srgan.models.zoo import load_model

    if args.no_reference and args.degrade:  # refused before any model loads
        raise SrganError("--degrade applies to the LR made from HR images; with --no-reference there are none")
    rt = resolve_runtime(RuntimeParams(device=args.device, precision=args.precision, threads=args.threads))
    gen = None if args.model == "bicubic" else load_model(args.model)
    scale = gen.scale if gen else args.scale or 4
    if gen and args.scale and args.scale != scale:
        raise SrganError(f"{args.model}: a ×{scale} model, but --scale {args.scale} was asked for")
    conv = convention(scale, args.convention)  # the border crop, and how bicubic and an HR folder's LR resize
    upscaler = generator_upscaler(gen, rt) if gen else bicubic(scale, conv)
    max_pixels = PreprocessParams().max_pixels
    if args.no_reference:
        images = read_folder(args.data, scale, max_pixels)
        per_photo = no_reference_scores([(name, upscaler(lr_img)) for name, lr_img in images], crop_border=scale)
        values = average([Scores(photo, 1, "none") for photo in per_photo]).values  # NaN (a flat photo) left out
        if args.json:
            print(json_line({"model": args.model, **values, "images": len(images), "crop_border": scale}))
        else:
            shown = "  ".join(f"{m.heading} {m.format(values[m.name])}" for m in NO_REFERENCE)
            print(
                f"{args.model} on {args.data} ({_count(len(images), 'image')} upscaled ×{scale}, no reference): {shown}"
            )
        return
    per_image, _ = evaluate(upscaler, pairs_from_hr_folder(args.data, conv, max_pixels, args.degrade), conv)
    scores = average(per_image)
    if args.json:
        print(to_json_line(args.model, scores, args.degrade))
    else:
        shown = "  ".join(f"{m.heading} {m.format(scores[m.name])}" for m in METRICS)
        print(
            f"{args.model} on {args.data}{f' (LR {args.degrade})' if args.degrade else ''} "
            f"({_count(scores.images, 'image')}, ×{scale}, "
            f"{scores.convention} convention): {shown}  (↑ higher is better, ↓ lower)"
        )
