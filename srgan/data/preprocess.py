"""Preprocess: downloaded images -> aligned (LR, HR) uint8 patch shards and eval PNGs.

Training then only memory-maps arrays: it never decodes a JPEG or resizes on the fly, and
its LR inputs come from the one MATLAB-compatible bicubic in `srgan.data.imresize`, then, with
`preprocess.degradation: realistic`, from the seeded chain of `srgan.data.degrade` (each patch
drawn from the seed, its image's path and its corner). An eval set named `<source>@<degradation>`
gets that degradation on its LR images (drawn from each image's stem alone, whatever the seed).

Layout under `out` (every path in the manifest is relative to `out`):
- `train/hr_00000.npy` uint8 (N, hr_size, hr_size, 3) RGB in [0, 255], and `train/lr_00000.npy`
  uint8 (N, hr_size/scale, hr_size/scale, 3): patch i of one is patch i of the other. At most
  `shard_size` patches per shard. The same under `val/`.
- `eval/<slug>/hr/<stem>.png` (HR modcropped to `scale`) and `eval/<slug>/lr/<stem>.png`; a
  grayscale input stays single-channel, because it is measured on its own values.
  Of two inputs with the same stem (`x.png`, `x.jpg`) the first in path order is kept.
- `manifest.json`, written last (schema in `prepare`).

Train/validation split, at the image level so no validation patch shares pixels with a
training patch: among the usable images (sorted by path), the validation set is the
round(val_fraction * n) images, at least 1 when val_fraction > 0 and n >= 2 and at most n - 1,
that rank first by sha256(seed, path). With a single usable image, validation uses patches
of that same image: its PSNR then is not held out, but training still has a validation curve.

Bad inputs never end the run: each is listed under `skipped` in the manifest with the reason.
Whether a file is usable is known only after decoding it in full (a truncated JPEG has a valid
header), so training images are decoded twice: once to check them and read their size, which
fixes the split and the patch grid before anything is written, and once to cut the patches.
Holding patches in memory instead would not fit Mirflickr25k. The check costs about a fifth of
the run on 500×375 JPEGs (the bicubic per patch is the rest).

Determinism: everything is ordered by sorted path, random choices are hashes of the seed and a
path, and pool results come back in task order, so a given seed and input gives the same bytes
whatever the number of workers.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from srgan.core import threads
from srgan.core.atomic import atomic_dir, atomic_path, write_json
from srgan.core.config import Params, PreprocessParams
from srgan.core.errors import SrganError
from srgan.data import sources
from srgan.data.degrade import REALISTIC, degrade
from srgan.data.imageio import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image, write_png
from srgan.data.imresize import imresize_uint8, modcrop
from srgan.data.patches import Corner, cut_patches, patch_corners, select_val_patches, split_images
from srgan.data.workers import Workers

MANIFEST = "manifest.json"


def input_folders(params: Params, raw_root: str | Path) -> tuple[Path, dict[str, Path]]:
    """The training folder and {eval slug: folder} that `download` wrote under `raw_root`."""

    def folder(name: str, role: sources.Role) -> Path:
        path = sources.raw_dir(raw_root, name, role)
        if not path.is_dir():
            raise SrganError(
                f"{path}: no downloaded images for the {role} source {name!r}; "
                "run the download stage first (dvc repro download)"
            )
        return path

    return folder(params.data.train, "train"), {sources.slug(name): folder(name, "eval") for name in params.data.eval}


def preprocess(params: Params, raw_root: str | Path, out: str | Path) -> dict[str, Any]:
    """The preprocess stage: read the sources named in `params` from `raw_root`, write `out`."""
    train_dir, eval_dirs = input_folders(params, raw_root)
    return prepare(train_dir, eval_dirs, out, seed=params.seed, scale=params.scale, settings=params.preprocess)


class _ShardWriter:
    """Streams patch pairs into `<root>/<split>/{hr,lr}_NNNNN.npy`, `shard_size` pairs per file.

    Only one shard is held in memory, so the dataset's size is bounded by disk, not RAM.
    """

    def __init__(self, root: Path, split: str, shard_size: int, hr_size: int, scale: int) -> None:
        self.root, self.split = root, split
        lr_size = hr_size // scale
        self.hr = np.empty((shard_size, hr_size, hr_size, 3), dtype=np.uint8)
        self.lr = np.empty((shard_size, lr_size, lr_size, 3), dtype=np.uint8)
        self.filled = 0
        self.shards: list[dict[str, Any]] = []

    def add(self, hr: np.ndarray, lr: np.ndarray) -> None:
        """Append uint8 hr (k, H, H, 3) and lr (k, h, h, 3) patches."""
        start = 0
        while start < len(hr):
            take = min(len(hr) - start, len(self.hr) - self.filled)
            self.hr[self.filled : self.filled + take] = hr[start : start + take]
            self.lr[self.filled : self.filled + take] = lr[start : start + take]
            self.filled += take
            start += take
            if self.filled == len(self.hr):
                self._flush()

    def close(self) -> list[dict[str, Any]]:
        """Write the last, partial shard; return the manifest's shard list."""
        if self.filled:
            self._flush()
        return self.shards

    def _flush(self) -> None:
        index = len(self.shards)
        entry: dict[str, Any] = {"patches": self.filled}
        for kind, array in (("hr", self.hr), ("lr", self.lr)):
            relative = f"{self.split}/{kind}_{index:05d}.npy"
            with atomic_path(self.root / relative, suffix=".npy") as tmp:
                np.save(tmp, array[: self.filled])
            entry[kind] = relative
        self.shards.append(entry)
        self.filled = 0


def _probe(task: tuple[Path, str], *, hr_size: int, max_pixels: int) -> tuple[int, int] | str:
    """Decode one training image in full: its (height, width) if usable, else the skip reason."""
    folder, name = task
    try:
        height, width = read_image(folder / name, max_pixels=max_pixels, keep_gray=True).shape[:2]
    except ImageReadError as err:
        return err.reason
    if min(height, width) < hr_size:
        return f"too small ({width}×{height} < {hr_size})"
    return height, width


def _cut(
    task: tuple[Path, str, list[Corner]], *, hr_size: int, scale: int, max_pixels: int, seed: int, degradation: str
) -> tuple[np.ndarray, np.ndarray]:
    """Decode a checked training image and cut its patches at the given corners; `realistic`
    degrades each LR patch (uint8 (k, h, h, 3)) by its own draw."""
    folder, name, corners = task
    image = read_image(folder / name, max_pixels=max_pixels)  # (H, W, 3) uint8 RGB
    hr, lr = cut_patches(image, corners, hr_size, scale)
    if degradation == REALISTIC:
        lr = np.stack([degrade(patch, REALISTIC, f"{seed}/{name}/{y},{x}") for patch, (y, x) in zip(lr, corners)])
    return hr, lr


def _eval_image(
    task: tuple[Path, str, Path, Path], *, scale: int, max_pixels: int, degradation: str | None
) -> str | None:
    """Write one eval image's modcropped HR and its (degraded) LR as PNGs; the skip reason, or None."""
    folder, name, hr_path, lr_path = task
    try:
        image = read_image(folder / name, max_pixels=max_pixels, keep_gray=True)  # (H, W[, 3]) uint8
    except ImageReadError as err:
        return err.reason
    height, width = image.shape[:2]
    if min(height, width) < scale:
        return f"too small ({width}×{height} < {scale})"
    hr_img = modcrop(image, scale)  # (H - H % scale, W - W % scale[, 3])
    write_png(hr_path, hr_img)
    lr_img = imresize_uint8(hr_img, 1 / scale)  # (H / scale, W / scale[, 3])
    write_png(lr_path, lr_img if degradation is None else degrade(lr_img, degradation, lr_path.stem))
    return None


def prepare(
    train_dir: Path, eval_dirs: dict[str, Path], out: str | Path, *, seed: int, scale: int, settings: PreprocessParams
) -> dict[str, Any]:
    """Write the patch shards, eval PNGs and manifest for one training folder and eval folders.

    Everything is written into a `.<out name>.<pid>.tmp` folder beside `out`, which replaces
    `out` only when complete, so a killed run never leaves a partial file under `out`
    (the next run removes such leftovers). Returns the manifest, also written to
    `out/manifest.json`:

        {"scale": int, "hr_size": int, "lr_size": int,
         "train": {"images": [path, ...], "num_images": int, "num_patches": int,
                   "shards": [{"hr": "train/hr_00000.npy", "lr": "train/lr_00000.npy", "patches": int}, ...]},
         "val":   {same keys: all held-out images, of which at most max_val_patches patches
                   are kept; images equal train's only when a single image is usable},
         "eval":  {slug: {"images": ["<stem>.png", ...], "num_images": int}, ...},
         "skipped": [{"source": "train" | "eval/<slug>", "file": path, "reason": str}, ...],
         "warnings": [str, ...]}   # what makes the result less than it seems (a single training image)

    Image paths are relative to their source folder. Raises `SrganError` when no training
    image is usable.
    """
    with atomic_dir(out) as staging, Workers(settings.workers or threads.claim("auto").threads) as workers:
        manifest = _prepare_into(staging, workers, train_dir, eval_dirs, seed=seed, scale=scale, settings=settings)
        write_json(staging / MANIFEST, manifest)
    return manifest


def _prepare_into(
    staging: Path,
    workers: Workers,
    train_dir: Path,
    eval_dirs: dict[str, Path],
    *,
    seed: int,
    scale: int,
    settings: PreprocessParams,
) -> dict[str, Any]:
    sizes, skipped = _usable_training_images(workers, train_dir, settings)
    splits, warnings = _write_train_val(staging, workers, train_dir, sizes, seed=seed, scale=scale, settings=settings)
    eval_sets = {}
    for slug, folder in eval_dirs.items():
        images, eval_skipped = _prepare_eval_set(
            staging, workers, slug, folder, scale=scale, max_pixels=settings.max_pixels
        )
        eval_sets[slug] = {"images": images, "num_images": len(images)}
        skipped += eval_skipped
    return {
        "scale": scale,
        "hr_size": settings.hr_size,
        "lr_size": settings.hr_size // scale,
        **splits,
        "eval": eval_sets,
        "skipped": skipped,
        "warnings": warnings,
    }


def _usable_training_images(
    workers: Workers, train_dir: Path, settings: PreprocessParams
) -> tuple[dict[str, tuple[int, int]], list[dict[str, str]]]:
    """The (height, width) of each training image that yields a patch, and the skipped ones."""
    names = list_images(train_dir)
    if not names:
        raise SrganError(f"{train_dir}: no image files ({', '.join(IMAGE_EXTENSIONS)}) to train on")
    probe = partial(_probe, hr_size=settings.hr_size, max_pixels=settings.max_pixels)
    sizes: dict[str, tuple[int, int]] = {}
    skipped = []
    results = workers.map(probe, [(train_dir, name) for name in names], "check train images")
    for name, result in zip(names, results, strict=True):
        if isinstance(result, str):
            skipped.append({"source": "train", "file": name, "reason": result})
        else:
            sizes[name] = result
    if not sizes:
        examples = "; ".join(f"{s['file']}: {s['reason']}" for s in skipped[:3])
        raise SrganError(
            f"{train_dir}: none of its {len(names)} image files is usable for training "
            f"({examples}{'; …' if len(skipped) > 3 else ''})"
        )
    return sizes, skipped


def _write_train_val(
    staging: Path,
    workers: Workers,
    train_dir: Path,
    sizes: dict[str, tuple[int, int]],
    *,
    seed: int,
    scale: int,
    settings: PreprocessParams,
) -> tuple[dict[str, Any], list[str]]:
    """Split the images, cut their patches into the train and val shards; the manifest's two
    split entries, and its warnings."""
    hr_size, stride = settings.hr_size, settings.stride
    train_names, val_names = split_images(list(sizes), settings.val_fraction, seed)
    warnings = []
    if set(val_names) & set(train_names):
        warnings.append(
            f"{train_dir}: only one usable training image, so validation uses patches of it: "
            "the validation PSNR is not held out; add images to data.train"
        )
    val_corners = select_val_patches(
        {name: sizes[name] for name in val_names},
        hr_size=hr_size,
        stride=stride,
        limit=settings.max_val_patches,
        seed=seed,
    )
    tasks = [(train_dir, name, corners) for name, corners in val_corners.items()]
    tasks += [(train_dir, name, patch_corners(*sizes[name], hr_size, stride)) for name in train_names]
    writers = {split: _ShardWriter(staging, split, settings.shard_size, hr_size, scale) for split in ("val", "train")}
    cut = partial(
        _cut, hr_size=hr_size, scale=scale, max_pixels=settings.max_pixels, seed=seed, degradation=settings.degradation
    )
    for index, (hr, lr) in enumerate(workers.map(cut, tasks, "cut patches")):
        writers["val" if index < len(val_corners) else "train"].add(hr, lr)
    splits = {}
    for split, images in (("train", train_names), ("val", val_names)):
        shards = writers[split].close()
        splits[split] = {
            "images": images,
            "num_images": len(images),
            "num_patches": sum(shard["patches"] for shard in shards),
            "shards": shards,
        }
    return splits, warnings


def _prepare_eval_set(
    staging: Path, workers: Workers, slug: str, folder: Path, *, scale: int, max_pixels: int
) -> tuple[list[str], list[dict[str, str]]]:
    """Write one eval set's PNG pairs; return its sorted output names and its skipped files."""
    source = f"eval/{slug}"
    skipped = []
    outputs: dict[str, str] = {}  # output name -> input path
    for name in list_images(folder):
        output = f"{Path(name).stem}.png"
        if output in outputs:  # x.png and x.jpg, or a/x.png and b/x.png: keep the first
            skipped.append({"source": source, "file": name, "reason": f"same output name as {outputs[output]}"})
        else:
            outputs[output] = name
    tasks = [
        (folder, name, staging / source / "hr" / output, staging / source / "lr" / output)
        for output, name in outputs.items()
    ]
    work = partial(_eval_image, scale=scale, max_pixels=max_pixels, degradation=sources.split_degradation(slug)[1])
    images = []
    for (output, name), reason in zip(outputs.items(), workers.map(work, tasks, f"eval {slug}"), strict=True):
        if reason is None:
            images.append(output)
        else:
            skipped.append({"source": source, "file": name, "reason": reason})
    skipped.sort(key=lambda entry: entry["file"])
    return sorted(images), skipped
