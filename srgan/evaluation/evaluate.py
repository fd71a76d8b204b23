"""Evaluation: upscale every image of a set with bicubic, SRResNet and SRGAN, measure, report.

An *upscaler* is any function uint8 LR (h, w[, 3]) → uint8 SR (h·s, w·s[, 3]); bicubic and a
generator are both upscalers, so `srgan eval` and the evaluate stage share one measuring path.
A generator runs through `srgan.inference.tiling.upscale_image`, the path `srgan upscale` uses.

Both sides of SRGAN's trade-off are reported: distortion against HR (MSE, PSNR, SSIM) and
perceptual error (the learned LPIPS distance to HR, and the no-reference NIQE, with HR's own NIQE
as the value a perfect result would have), every metric from `srgan.evaluation.scores.METRICS`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from srgan.core.config import Params
from srgan.core.errors import SrganError
from srgan.core.metrics import Convention, convention
from srgan.core.provenance import dataset_digest
from srgan.core.runtime import Runtime
from srgan.data.degrade import degrade
from srgan.data.imageio import list_images, read_image
from srgan.data.imresize import bicubic_upscale, imresize_rounded_once, imresize_uint8
from srgan.data.sources import slug, split_degradation
from srgan.evaluation.report import (
    MODEL_LABELS,
    MODELS,
    SetResults,
    departures,
    figure,
    perception_distortion_plot,
    run_description,
    score_row,
    scores_table,
    write_reports,
)
from srgan.evaluation.scores import Scores, average, measure, no_reference, unmeasured
from srgan.inference.tiling import upscale_image
from srgan.models.checkpoint import load_generator
from srgan.models.networks import Generator

if TYPE_CHECKING:  # the stage's main opens the MLflow run; importing mlflow here would slow `srgan eval`
    from srgan.tracking.tracker import Tracker

Upscaler = Callable[[np.ndarray], np.ndarray]
T = TypeVar("T")


@dataclass(frozen=True)
class Pair:
    """One eval image: HR modcropped to the scale, LR made from it by MATLAB bicubic.

    Both uint8, (H, W, 3) RGB or (H, W) for grayscale images, which are measured raw.
    """

    name: str
    lr_img: np.ndarray
    hr_img: np.ndarray


def bicubic(scale: int, conv: Convention) -> Upscaler:
    """The bicubic baseline, resized as the convention says (MATLAB's uint8 or in float)."""
    return lambda lr_img: bicubic_upscale(lr_img, scale, in_float=conv.resize_in_float)


def downscale(hr_img: np.ndarray, scale: int, conv: Convention, degradation: str | None, name: str) -> np.ndarray:
    """An HR image's LR input, made as the convention says: MATLAB's uint8 bicubic, as preprocess
    makes it, or in float and rounded once; then degraded (`srgan.data.degrade`, drawn from the
    image's name, as preprocess draws it) when a degradation is named."""
    resize = imresize_rounded_once if conv.resize_in_float else imresize_uint8
    lr_img = resize(hr_img, 1 / scale)
    return lr_img if degradation is None else degrade(lr_img, degradation, name)


def generator_upscaler(gen: Generator, rt: Runtime) -> Upscaler:
    """`gen` on `rt`, through `srgan upscale`'s tiled inference; grayscale in gives grayscale out."""
    return lambda lr_img: upscale_image(gen, lr_img, rt)


def pairs_from_prepared(folder: Path, conv: Convention, max_pixels: int, degradation: str | None) -> list[Pair]:
    """The eval pairs preprocess wrote: `<folder>/hr/<name>.png` and `<folder>/lr/<name>.png`;
    under a convention that resizes in float, the LR is made again from the HR that way (and
    degraded again as preprocess degraded it)."""
    hr_files = [folder / "hr" / name for name in list_images(folder / "hr")]
    if not hr_files:
        raise SrganError(f"{folder}/hr: no images; run the preprocess stage (dvc repro preprocess)")
    pairs = []
    for path in hr_files:
        hr_img = read_image(path, max_pixels=max_pixels, keep_gray=True)
        if conv.resize_in_float:
            lr_img = downscale(hr_img, conv.crop_border, conv, degradation, path.stem)
        else:
            lr_img = read_image(folder / "lr" / path.name, max_pixels=max_pixels, keep_gray=True)
        pairs.append(Pair(path.stem, lr_img, hr_img))
    return pairs


def _named(name: str, compute: Callable[[], T]) -> T:
    """`compute()`, with an image's name put in front of a measuring error (too small, …)."""
    try:
        return compute()
    except SrganError as err:
        raise SrganError(f"{name}: {err}") from None


def evaluate(upscaler: Upscaler, pairs: Sequence[Pair], conv: Convention) -> tuple[list[Scores], list[np.ndarray]]:
    """Each pair's scores (`average` gives the set's), and the SR images (kept for figures)."""
    outputs = [upscaler(pair.lr_img) for pair in pairs]
    scores = [_named(pair.name, lambda: measure(sr, pair.hr_img, conv)) for sr, pair in zip(outputs, pairs)]
    for pair, result in zip(pairs, scores):
        _warn_unmeasured(pair.name, result.values)
    return scores, outputs


def no_reference_scores(images: Sequence[tuple[str, np.ndarray]], crop_border: int) -> list[dict[str, float]]:
    """The no-reference metrics (NIQE) of each named uint8 image ((H, W, 3) RGB or (H, W) gray),
    `crop_border` px cropped."""
    scores = [_named(name, lambda: no_reference(image, crop_border)) for name, image in images]
    for (name, _), values in zip(images, scores):
        _warn_unmeasured(name, values)
    return scores


def _warn_unmeasured(name: str, values: dict[str, float]) -> None:
    """Name on stderr an image without a finite value of some metric (NIQE of a flat image, PSNR of
    an exact output), and why: `average` leaves it out of that metric's mean."""
    missing = unmeasured(values)
    if missing:
        means = "that mean" if len(missing) == 1 else "those means"
        others = ", its other metrics count" if len(values) > len(missing) else ""  # none with --no-reference
        reasons = "; ".join(metric.unmeasurable for metric in missing)
        print(f"warning: {name}: {reasons}; left out of {means}{others}", file=sys.stderr)


def run_evaluation(
    params: Params, rt: Runtime, data_dir: Path, srresnet_path: Path, srgan_path: Path, reports: Path, tracker: Tracker
) -> None:
    """The evaluate stage: every data.eval set × (bicubic, SRResNet, SRGAN) → reports, and the
    metrics, per-image table and figures to the stage's MLflow run (`tracker`)."""
    conv = convention(params.scale, params.evaluate.convention)
    expect = {"scale": params.scale}
    tracker.log_dataset("prepared", data_dir, dataset_digest(data_dir), context="evaluation")
    lineage = tracker.link_inputs({"srresnet": srresnet_path, "srgan": srgan_path})
    upscalers = {
        "bicubic": bicubic(params.scale, conv),
        "srresnet": generator_upscaler(load_generator(srresnet_path, expect=expect), rt),
        "srgan": generator_upscaler(load_generator(srgan_path, expect=expect), rt),
    }
    results: dict[str, SetResults] = {}
    figures: dict[str, np.ndarray] = {}
    rows: list[dict[str, Any]] = []
    for source in params.data.eval:
        name = slug(source)
        degradation = split_degradation(source)[1]
        pairs = pairs_from_prepared(data_dir / "eval" / name, conv, params.preprocess.max_pixels, degradation)
        results[name], set_rows, set_figures = _evaluate_set(name, pairs, upscalers, conv, params)
        rows += set_rows
        figures.update(set_figures)
    figures["perception_distortion"] = perception_distortion_plot(results)
    notes = [
        f"evaluated on {rt.describe()['runtime.hardware']} ({rt.device.type}, {rt.precision}), "
        f"torch {torch.__version__}",
        *departures(params),
    ]
    table = scores_table(rows)
    metrics = write_reports(reports, results, conv, notes, figures, table)
    flat = {
        f"{s}.{m}.{k}": v for s, models in metrics.items() for m, scores in models.items() for k, v in scores.items()
    }
    tracker.log_metrics(flat, step=0)
    if "lineage.srgan_run_id" in lineage:  # the registered version of the SRGAN measured here
        # `eval.<convention>.<set>.<metric>`: a re-evaluation under another convention adds its own
        # tags beside these instead of overwriting them (`srgan registry list` reads them back).
        srgan_scores = {
            f"eval.{conv.name}.{s}.{k}": str(v) for s, models in metrics.items() for k, v in models["srgan"].items()
        }
        tracker.tag_model_versions(lineage["lineage.srgan_run_id"], srgan_scores)
    tracker.log_table(table, "scores.json")
    tracker.log_artifact(reports / "results.md")
    tracker.log_artifact(reports / "figures", "figures")  # beside results.md: its image links resolve in the UI
    tracker.describe(run_description(results, conv))
    for name, image in figures.items():
        tracker.log_image(image, key=name, step=0)


def _evaluate_set(
    name: str, pairs: Sequence[Pair], upscalers: dict[str, Upscaler], conv: Convention, params: Params
) -> tuple[SetResults, list[dict[str, Any]], dict[str, np.ndarray]]:
    """One eval set: its mean scores per model and HR's NIQE, its per-image rows, its figures."""
    outputs: dict[str, list[np.ndarray]] = {}
    scores: dict[str, Scores] = {}
    rows = []
    for model, upscaler in upscalers.items():
        per_image, outputs[model] = evaluate(upscaler, pairs, conv)
        scores[model] = average(per_image)
        rows += [score_row(name, pair.name, model, s.values) for pair, s in zip(pairs, per_image)]
    hr_scores = no_reference_scores([(pair.name, pair.hr_img) for pair in pairs], conv.crop_border)
    rows += [score_row(name, pair.name, "hr", values) for pair, values in zip(pairs, hr_scores)]
    figures = {
        f"{name}_{pair.name}": figure(
            pair.lr_img,
            pair.hr_img,
            {MODEL_LABELS[m]: outputs[m][i] for m in MODELS},
            params.scale,
            params.evaluate.figure_crop,
        )
        for i, pair in enumerate(pairs[: params.evaluate.figures])
    }
    hr_means = average([Scores(values, 1, "none") for values in hr_scores]).values  # a flat HR image left out
    return SetResults(scores, hr_means), rows, figures
