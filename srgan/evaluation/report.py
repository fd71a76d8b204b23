"""The evaluate stage's reports: metrics.json, results.md (the reference slides' table, the paper's
rows, the trade-off sentence), the side-by-side figures and the perception–distortion plot."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from srgan.core.atomic import write_json, write_text
from srgan.core.config import NO_START, Params
from srgan.core.metrics import Convention
from srgan.core.provenance import file_sha256
from srgan.data.imageio import write_png
from srgan.evaluation.scores import METRIC_NAMES, METRICS, PERCEPTUAL, Metric, Scores
from srgan.models.zoo import RELEASED, is_model_uri
from srgan.training.losses import vgg_weights_origin

MODELS = ("bicubic", "srresnet", "srgan")


# Table 2 of Ledig et al. 2017 (×4, PSNR/SSIM), and the MATLAB bicubic baseline of EDSR/RCAN.
PAPER = {
    "set5": {"bicubic": (28.42, 0.8104), "srresnet": (32.05, 0.9019), "srgan": (29.40, 0.8472)},
    "set14": {"bicubic": (26.00, 0.7027), "srresnet": (28.49, 0.8184), "srgan": (26.02, 0.7397)},
    "bsd100": {"bicubic": (25.96, 0.6675), "srresnet": (27.58, 0.7620), "srgan": (25.16, 0.6688)},
}


MODEL_LABELS = {"bicubic": "bicubic", "srresnet": "SRResNet", "srgan": "SRGAN"}
SCORE_COLUMNS = ("set", "image", "model", *METRIC_NAMES)


@dataclass(frozen=True)
class SetResults:
    """One eval set: each model's mean scores, and the mean no-reference scores (NIQE) of the HR
    images themselves."""

    models: dict[str, Scores]
    hr: dict[str, float]

    @property
    def images(self) -> int:
        return next(iter(self.models.values())).images


def metrics_json(results: dict[str, SetResults]) -> dict[str, dict[str, dict[str, float]]]:
    """`{set: {model: {metric: value}, hr: {no-reference metric: value}}}`, rounded so equal runs
    give equal bytes."""
    return {
        name: {
            **{model: {k: round(v, 4) for k, v in s.values.items()} for model, s in result.models.items()},
            "hr": {k: round(v, 4) for k, v in result.hr.items()},
        }
        for name, result in results.items()
    }


def trade_off(result: SetResults) -> str:
    """One sentence on where SRGAN falls against SRResNet: the paper's claim is lower PSNR, better perception."""
    gan, mse_model = result.models["srgan"], result.models["srresnet"]
    d_psnr = gan["psnr"] - mse_model["psnr"]
    changes = [f"{m.label} {gan[m.name] - mse_model[m.name]:+.{m.decimals}f}" for m in PERCEPTUAL]
    better = all(gan[m.name] < mse_model[m.name] for m in PERCEPTUAL)
    verdict = (
        "the paper's trade-off: less fidelity, more realism"
        if d_psnr < 0 and better
        else "SRGAN better on every count"
        if better
        else "not the paper's trade-off, which gives up PSNR for lower perceptual error"
    )
    hr = ", ".join(f"{k.upper()} {v:.2f}" for k, v in result.hr.items())
    return f"SRGAN vs SRResNet: PSNR {d_psnr:+.2f} dB, {', '.join(changes)} (lower is better; HR: {hr}); {verdict}."


def _metric_row(metric: Metric, result: SetResults) -> str:
    hr = metric.format(result.hr[metric.name]) if metric.name in result.hr else ""
    cells = [metric.format(result.models[m][metric.name]) for m in MODELS]
    return f"| {metric.heading} | " + " | ".join(cells) + f" | {hr} |"


def results_markdown(results: dict[str, SetResults], conv: Convention, notes: Sequence[str]) -> str:
    """The reference slides' table per set (one row per metric, one column per model, and HR's
    no-reference scores), the paper's rows where it has the set, the trade-off in one sentence, and
    the plot."""
    lines = [
        "# Results",
        "",
        f"Metric convention: {conv.describe()}; images in 0–255. ↑: higher is better, ↓: lower is better. "
        "LPIPS: v0.1, AlexNet, on RGB with the same border crop (a learned distance to HR). NIQE "
        "(no reference) on BT.601 Y with the same border crop, MATLAB's release; HR's own NIQE is what a "
        "perfect result would score.",
        "",
    ]
    lines += [f"- {note}" for note in notes]
    lines += _set_tables(results)
    if any(name in PAPER for name in results):
        lines += [
            "",
            "Paper rows: SRResNet and SRGAN from Ledig et al. 2017, Table 2; bicubic as published "
            "with MATLAB by the EDSR/RCAN papers. The paper reports neither LPIPS nor NIQE; its claim is the "
            "same trade-off, shown by mean opinion scores: SRGAN below SRResNet in PSNR, above it in MOS.",
        ]
    lines += [
        "",
        "![perception–distortion](figures/perception_distortion.png)",
        "",
        "Perception–distortion: PSNR against each perceptual metric per model (one row of panels per metric), "
        "HR's NIQE as the dashed line. Better is right (PSNR) and down (LPIPS, NIQE).",
    ]
    return "\n".join(lines) + "\n"


def _set_tables(results: dict[str, SetResults]) -> list[str]:
    """Markdown lines: per set, its table (one row per metric, one column per model and HR's
    no-reference scores), the paper's rows where it has the set, and the trade-off sentence."""
    lines = []
    for name, result in results.items():
        lines += [
            "",
            f"## {name} ({result.images} image{'s' * (result.images != 1)})",
            "",
            "| metric | " + " | ".join([*(MODEL_LABELS[m] for m in MODELS), "HR"]) + " |",
            "|---|" + "---:|" * (len(MODELS) + 1),
        ]
        lines += [_metric_row(metric, result) for metric in METRICS]
        if name in PAPER:
            paper = PAPER[name]
            lines.append("| paper PSNR | " + " | ".join(f"{paper[m][0]:.2f}" for m in MODELS) + " | |")
            lines.append("| paper SSIM | " + " | ".join(f"{paper[m][1]:.4f}" for m in MODELS) + " | |")
        lines += ["", trade_off(result)]
    return lines


def run_description(results: dict[str, SetResults], conv: Convention) -> str:
    """The evaluate run's description in the MLflow UI (Markdown): the convention and each set's
    table, where the run's page opens, instead of 16 flat metrics; results.md has the rest."""
    lines = [f"Metric convention: {conv.describe()}. ↑: higher is better, ↓: lower is better.", *_set_tables(results)]
    lines += [
        "",
        "How this run differs from the paper, and the figures: `results.md` in Artifacts; "
        "every image's scores: `scores.json`.",
    ]
    return "\n".join(lines) + "\n"


def perception_distortion_plot(results: dict[str, SetResults]) -> np.ndarray:
    """PSNR (x) against each perceptual metric (y; a row of panels each), one point per model, one
    column per set, HR's no-reference value as a dashed line.

    Returns the figure as uint8 (H, W, 3) RGB, written like the other figures.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = len(PERCEPTUAL)
    fig, axes = plt.subplots(rows, len(results), figsize=(4.2 * len(results), 3.6 * rows), squeeze=False)
    for metric, row in zip(PERCEPTUAL, axes):
        for ax, (name, result) in zip(row, results.items()):
            for model in MODELS:
                s = result.models[model]
                ax.scatter(s["psnr"], s[metric.name], s=40, label=MODEL_LABELS[model])
                ax.annotate(
                    MODEL_LABELS[model],
                    (s["psnr"], s[metric.name]),
                    textcoords="offset points",
                    xytext=(5, 4),
                    fontsize=8,
                )
            if metric.name in result.hr:
                value = result.hr[metric.name]
                ax.axhline(value, linestyle="--", color="gray", label=f"HR {metric.label} {metric.format(value)}")
            ax.set_title(name, fontsize=10)
            ax.set_xlabel("PSNR (dB), higher is better")
            ax.set_ylabel(f"{metric.label}, lower is better")
            ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def figure(
    lr_img: np.ndarray,
    hr_img: np.ndarray,
    outputs: dict[str, np.ndarray],
    scale: int,
    crop: int,
    *,
    centre: tuple[int, int] | None = None,
    lr_label: str = "LR",
) -> np.ndarray:
    """Crops side by side: LR (nearest-upscaled) | each output under its label | HR, around the
    image's centre or the HR pixel (y, x) `centre`. Returns uint8 (crop + label bar,
    (len(outputs) + 2)·crop + gaps, 3) RGB; grayscale images are shown as RGB."""
    height, width = hr_img.shape[:2]
    side = min(crop, height, width) // scale * scale
    y, x = centre or (height // 2, width // 2)
    top = min(max(y - side // 2, 0), height - side) // scale * scale
    left = min(max(x - side // 2, 0), width - side) // scale * scale

    def rgb(img: np.ndarray) -> np.ndarray:
        return np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img

    lr_crop = lr_img[top // scale : (top + side) // scale, left // scale : (left + side) // scale]
    panels = {lr_label: np.kron(rgb(lr_crop), np.ones((scale, scale, 1), dtype=np.uint8))}
    panels.update({label: rgb(output)[top : top + side, left : left + side] for label, output in outputs.items()})
    panels["HR"] = rgb(hr_img)[top : top + side, left : left + side]
    gap, bar = 4, 16
    canvas = Image.new("RGB", (len(panels) * (side + gap) - gap, side + bar), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, panel) in enumerate(panels.items()):
        canvas.paste(Image.fromarray(panel), (i * (side + gap), bar))
        draw.text((i * (side + gap) + 2, 2), label, fill="black")
    return np.asarray(canvas)


def write_reports(
    reports: Path,
    results: dict[str, SetResults],
    conv: Convention,
    notes: Sequence[str],
    figures: dict[str, np.ndarray],
    table: pd.DataFrame,
) -> dict[str, Any]:
    """Write metrics.json, scores.csv, results.md and figures/*.png under `reports`; return the
    metrics dict. Numbers are rounded to 4 decimals, so equal runs give equal bytes."""
    metrics = metrics_json(results)
    write_json(reports / "metrics.json", metrics)
    write_text(reports / "scores.csv", table.to_csv(index=False, float_format="%.4f", lineterminator="\n"))
    write_text(reports / "results.md", results_markdown(results, conv, notes))
    figures_dir = reports / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    for stale in figures_dir.glob("*.png"):
        if stale.stem not in figures:
            stale.unlink()
    for name, image in figures.items():
        write_png(figures_dir / f"{name}.png", image)
    return metrics


def score_row(set_name: str, image: str, model: str, values: dict[str, float]) -> dict[str, Any]:
    """One row of the per-image table: a model's scores, or HR's no-reference ones (nothing is
    HR's reference, so its other columns stay empty)."""
    return {"set": set_name, "image": image, "model": model, **values}


def scores_table(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Per-image scores, one row per (set, image, model); HR rows carry only their no-reference
    scores. The means of these are metrics.json's."""
    return pd.DataFrame(list(rows), columns=list(SCORE_COLUMNS))


def start_note(spec: str) -> str:
    """Where the MSE phase started, with what identifies the start: a released generator's summary
    and sha256, a file's sha256 (an MLflow URI's is on the pretrain run, tag `init.sha256`)."""
    if spec in RELEASED:
        what = f"the released {spec} ({RELEASED[spec].summary}; sha256 {RELEASED[spec].sha256[:16]}…)"
    elif is_model_uri(spec):
        what = f"{spec} (its sha256: the pretrain run's MLflow tag init.sha256)"
    else:
        what = f"{spec} (sha256 {file_sha256(Path(spec))[:16]}…)"
    return f"pretrain.init={spec}: the SRResNet phase started from {what}; the paper's starts from scratch"


def departures(params: Params) -> list[str]:
    """How this run differs from the paper, for results.md: every model or schedule option."""
    notes = [start_note(params.pretrain.init)] if params.pretrain.init != NO_START else []
    if params.model.bicubic_skip:
        notes.append(
            "model.bicubic_skip=true: the generator predicts a residual over bicubic upsampling "
            "of its input (VDSR-style); not in the paper"
        )
    if params.model.blocks != 16 or params.model.channels != 64:
        notes.append(
            f"generator of {params.model.blocks} residual blocks × {params.model.channels} channels "
            "(the paper: 16 × 64)"
        )
    t = params.train
    if t.content_loss == "mse":
        notes.append("SRGAN content loss mse (the paper's best: vgg54)")
    else:
        notes.append(
            f"SRGAN content loss {t.content_loss}, features {t.vgg_activation} the ReLU, on "
            f"{vgg_weights_origin(t.vgg_weights)}"
            + ("" if t.content_loss == "vgg54" else " (the paper's best: vgg54)")
            + ("" if t.vgg_activation == "after" else "; before the ReLU is ESRGAN's choice, the paper's is after")
        )
    recipe = (
        (
            params.pretrain.icnr and params.pretrain.init == NO_START and params.model.upsampler == "pixelshuffle",
            "pretrain.icnr=true: ICNR init of the sub-pixel convs (Aitken et al. 2017)",
        ),
        (t.pixel_weight > 0, f"train.pixel_weight={t.pixel_weight:g}: an L1 pixel term (BasicSR's recipes)"),
        (t.adv_weight != 1e-3, f"train.adv_weight={t.adv_weight:g} (the paper: 1e-3)"),
        (t.freeze_bn, "train.freeze_bn=true: the generator's BatchNorm statistics frozen in the GAN phase (ESRGAN)"),
        (params.model.d_norm != "batch", f"model.d_norm={params.model.d_norm}: no BatchNorm in the discriminator"),
        (
            params.model.upsampler == "nearest",
            "model.upsampler=nearest: each ×2 stage is nearest-neighbour ×2 + 3×3 conv (ESRGAN's), "
            "not a sub-pixel conv",
        ),
        (
            params.preprocess.degradation == "realistic",
            "preprocess.degradation=realistic: the training LR blurred, noised and JPEG/H.264-compressed by a seeded "
            "chain (srgan/data/degrade.py); the paper trains on bicubic LR",
        ),
    )
    notes += [text for departs, text in recipe if departs]
    if params.data.train not in ("mirflickr25k",):
        notes.append(
            f"trained on `{params.data.train}` (the paper: 350k ImageNet images; the reference slides: Mirflickr25k)"
        )
    notes.append(
        f"schedule: {params.pretrain.steps} SRResNet and {params.train.steps} SRGAN updates, "
        f"batch {params.pretrain.batch_size}/{params.train.batch_size}, HR crops "
        f"{params.pretrain.crop_size}/{params.train.crop_size} px (the paper: 1e6 and 2e5 updates, batch 16, 96 px)"
    )
    return notes
