"""Models on the inputs people have: clean, JPEG, noisy and H.264 LR, side by side.

Each HR image of each set is downscaled ×4 (MATLAB bicubic, as the evaluate stage does) and its LR
then degraded as `srgan eval --degrade` names it (`srgan.data.degrade`); every model upscales that
LR and is scored against the HR (`matlab` convention). One row per set × degradation × model is
appended to a JSON-lines file, so an interrupted run resumes where it stopped. The table prints
each model's LPIPS and PSNR, and its LPIPS as a ratio of the reference model's on the same inputs.

    .venv/bin/python benchmarks/degraded_inputs.py --data sample --data ../shared/data/benchmarks/BSD100 \
        --model bicubic --model srgan-t91bsd200 --model srgan-t91bsd200-real --out rows.jsonl \
        [--reference srgan-t91bsd200] [--degrade clean --degrade jpeg50 ...]

`--data sample` is the pipeline's offline `sample` eval photos (scikit-image's). NIQE is printed for
clean input only: on compressed input it rewards sharpened artefacts (it falls as JPEG gets worse),
so it cannot rank models there.

`--figure HR_IMAGE --centre Y X --figure-out OUT.png` instead draws one row of crops per
degradation (its LR | each model | HR), as the docs show them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from srgan.core.config import PreprocessParams, RuntimeParams
from srgan.core.metrics import Convention, convention
from srgan.core.runtime import cpu_name, resolve_runtime
from srgan.data.imageio import read_image, write_png
from srgan.data.imresize import modcrop
from srgan.evaluation.evaluate import Upscaler, bicubic, downscale, evaluate, generator_upscaler
from srgan.evaluation.folders import pairs_from_hr_folder
from srgan.evaluation.report import figure
from srgan.evaluation.scores import average
from srgan.models.zoo import load_model

DEGRADATIONS = ("clean", "jpeg75", "jpeg50", "noise5", "crf28")


def sample_folder(root: Path) -> Path:
    """The pipeline's `sample` eval photos, written under `root` as the download stage writes them."""
    from srgan.data.download import materialize

    return next(f for f in materialize("sample", root, root / "cache", max_bytes=10**9) if f.name == "eval")


def _upscalers(models: list[str], conv: Convention) -> dict[str, Upscaler]:
    """Each model's upscaler: bicubic, or the generator its released name or file loads (once)."""
    rt = resolve_runtime(RuntimeParams())
    return {m: bicubic(4, conv) if m == "bicubic" else generator_upscaler(load_model(m), rt) for m in models}


def _degradation(name: str) -> str | None:
    """The `srgan.data.degrade` name of a row's input (`clean`: none)."""
    return None if name == "clean" else name


def measure_rows(folders: dict[str, Path], models: list[str], degradations: list[str], out: Path) -> None:
    """Append the rows `out` lacks: mean PSNR, SSIM, LPIPS and NIQE per set × degradation × model."""
    done = (
        {(r["set"], r["degrade"], r["model"]) for r in map(json.loads, out.read_text().splitlines())}
        if out.exists()
        else set()
    )
    todo = {
        (set_name, degradation): [m for m in models if (set_name, degradation, m) not in done]
        for set_name in folders
        for degradation in degradations
    }
    conv = convention(4)
    upscalers = _upscalers([m for m in models if any(m in wanted for wanted in todo.values())], conv)
    for (set_name, degradation), wanted in todo.items():
        if wanted:
            pairs = pairs_from_hr_folder(
                folders[set_name], conv, PreprocessParams().max_pixels, _degradation(degradation)
            )
            for model in wanted:
                scores = average(evaluate(upscalers[model], pairs, conv)[0])
                row = {
                    "set": set_name,
                    "degrade": degradation,
                    "model": model,
                    **scores.values,
                    "images": scores.images,
                }
                with out.open("a") as stream:
                    stream.write(json.dumps(row) + "\n")
                print(f"{set_name} {degradation} {model}: PSNR {row['psnr']:.2f} LPIPS {row['lpips']:.3f}", flush=True)


def figure_rows(hr_path: Path, models: list[str], degradations: list[str], centre: tuple[int, int]) -> np.ndarray:
    """One row of 128-px crops per degradation: its LR (nearest-upscaled) | each model | HR."""
    conv = convention(4)
    upscalers = _upscalers(models, conv)
    hr_img = modcrop(read_image(hr_path, max_pixels=PreprocessParams().max_pixels), 4)
    rows = []
    for degradation in degradations:
        lr_img = downscale(hr_img, 4, conv, _degradation(degradation), hr_path.stem)
        outputs = {m: upscale(lr_img) for m, upscale in upscalers.items()}
        rows.append(figure(lr_img, hr_img, outputs, 4, 128, centre=centre, lr_label=f"LR, {degradation}"))
    return np.concatenate(rows, axis=0)


def table(out: Path, models: list[str], reference: str) -> str:
    """Markdown: per set, a row per degradation (in `DEGRADATIONS` order), `LPIPS / PSNR` per model
    (in `models` order), then each model's LPIPS over the reference's on the same inputs."""
    rows = [row for row in map(json.loads, out.read_text().splitlines()) if row["model"] in models]
    lines = []
    for set_name in dict.fromkeys(r["set"] for r in rows):
        lines += [f"\n{set_name}: LPIPS ↓ / PSNR dB (NIQE ↓ on clean only); LPIPS ÷ {reference}'s\n"]
        lines += [
            "| input | " + " | ".join(models) + " | " + " | ".join(f"÷ ({m})" for m in models if m != reference) + " |"
        ]
        lines += ["|---" * (2 * len(models)) + "|"]
        for degradation in [d for d in DEGRADATIONS if any(r["set"] == set_name and r["degrade"] == d for r in rows)]:
            got = {r["model"]: r for r in rows if r["set"] == set_name and r["degrade"] == degradation}
            cells = [
                f"{got[m]['lpips']:.3f} / {got[m]['psnr']:.2f}"
                + (f" / {got[m]['niqe']:.2f}" if degradation == "clean" else "")
                if m in got
                else "–"
                for m in models
            ]
            ratios = [
                f"{got[m]['lpips'] / got[reference]['lpips']:.2f}" if m in got and reference in got else "–"
                for m in models
                if m != reference
            ]
            lines.append(f"| {degradation} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", default=[], help="folder of HR images, or `sample`")
    parser.add_argument("--model", action="append", required=True, help="bicubic, a released name or a generator file")
    parser.add_argument("--degrade", action="append", choices=DEGRADATIONS, help="default: all five")
    parser.add_argument("--reference", default="srgan-t91bsd200")
    parser.add_argument("--out", type=Path, help="JSON-lines file of rows (appended to, resumed from)")
    parser.add_argument("--figure", type=Path, help="an HR image: draw crops instead of measuring")
    parser.add_argument("--centre", type=int, nargs=2, metavar=("Y", "X"), help="the crops' centre in HR pixels")
    parser.add_argument("--figure-out", type=Path, help="where --figure writes its PNG")
    args = parser.parse_args()
    if args.figure:
        if args.centre is None or args.figure_out is None:
            parser.error("--figure needs --centre Y X and --figure-out OUT.png")
        degradations = args.degrade or ["clean", "jpeg50", "crf28"]
        write_png(args.figure_out, figure_rows(args.figure, args.model, degradations, tuple(args.centre)))
        return
    if args.out is None or not args.data:
        parser.error("measuring needs --out ROWS.jsonl and at least one --data (or --figure to draw crops)")
    with tempfile.TemporaryDirectory() as tmp:
        folders = {
            d if d == "sample" else Path(d).name: sample_folder(Path(tmp)) if d == "sample" else Path(d)
            for d in args.data
        }
        measure_rows(folders, args.model, args.degrade or list(DEGRADATIONS), args.out)
    print(f"\n{cpu_name()}, ×4, matlab convention" + table(args.out, args.model, args.reference))


if __name__ == "__main__":
    main()
