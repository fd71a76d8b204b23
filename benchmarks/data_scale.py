"""Mirflickr25k-sized data through the real download and preprocess stages, and the training loader.

Builds a folder of JPEGs shaped like Mirflickr25k (500 px on the long side; 4:3, 3:2, 16:9 and
square frames, a fifth of them portrait, in shares chosen to resemble Flickr photos, not counted
from Mirflickr; JPEG quality 80–95) from random crops of scikit-image's colour
photos, so the files are photo JPEGs of those sizes. For each image count it then runs,
in a fresh project folder, `python -m stages.download` (a local-folder source) and
`python -m stages.preprocess` (the reference work's 64→256 patches: `hr_size: 256`,
`stride: 128`), and reports wall time, images/s, CPU use (user + system seconds over wall seconds
× cores: 1.0 is every core busy), the peak memory of the stage's process tree (RSS summed over its
processes, and PSS, which counts a shared library page once) and the disk each stage wrote. The
ratios between the counts show how each cost grows.

Last, on the largest count's shards: batches/s of the training loader (`RandomCrops` through
`batch_loader`, crop 256, batch 8, as `runtime.workers` 1 and 2 build it) against the steps/s of
the SRResNet update on the same batch on this CPU (the consumer the loader must outpace; the
target is 10×). `loader_feed.py` measures the same pair on a GPU machine.

    .venv/bin/python benchmarks/data_scale.py [--images 2500,25000] [--work DIR] [--json]

Needs about 0.45 MB of disk per image (photos, the download stage's copy, shards); `--work`
defaults to a temporary folder, removed at the end. Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import skimage.data
from loader_feed import CROP, loader_rate, step_rate  # benchmarks/ is this script's import path
from PIL import Image

from srgan.core.runtime import cpu_name

REPO = Path(__file__).resolve().parents[1]
PHOTOS = (
    "astronaut.png",
    "coffee.png",
    "chelsea.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
)
# (long side, short side, share): Mirflickr25k's photos are at most 500 px on the long side; the shares
# are a guess at a Flickr mix, not counted from Mirflickr.
FRAMES = ((500, 375, 0.45), (500, 333, 0.35), (500, 500, 0.05), (500, 281, 0.15))
PORTRAIT_SHARE = 0.2


@functools.cache
def _source(name: str) -> Image.Image:
    return Image.open(Path(skimage.data.__file__).parent / name).convert("RGB")


def _make_photo(task: tuple[int, Path]) -> int:
    """Write photo `index` (a seeded random crop, resized to a Mirflickr frame) as JPEG; its bytes."""
    index, path = task
    rng = np.random.default_rng(index)
    source = _source(PHOTOS[index % len(PHOTOS)])
    long, short, _ = FRAMES[rng.choice(len(FRAMES), p=[f[2] for f in FRAMES])]
    width, height = (short, long) if rng.random() < PORTRAIT_SHARE else (long, short)
    # The largest crop of the frame's aspect that fits, shrunk by up to half, at a random place.
    fit = min(source.width / width, source.height / height) * rng.uniform(0.5, 1.0)
    crop_w, crop_h = int(width * fit), int(height * fit)
    x, y = rng.integers(0, source.width - crop_w + 1), rng.integers(0, source.height - crop_h + 1)
    photo = source.crop((x, y, x + crop_w, y + crop_h)).resize((width, height), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        photo = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    photo.save(path, quality=int(rng.integers(80, 96)))
    return path.stat().st_size


def make_photos(folder: Path, count: int) -> int:
    """`count` Mirflickr-like JPEGs in `folder` (im1.jpg … as Mirflickr names them); total bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    tasks = [(i, folder / f"im{i + 1}.jpg") for i in range(count)]
    with multiprocessing.get_context("spawn").Pool(os.cpu_count()) as pool:
        return sum(pool.imap(_make_photo, tasks, chunksize=64))


def _tree_memory(proc: psutil.Process, pss: bool) -> int:
    """Bytes of memory of `proc` and its descendants: the sum of RSS (shared library pages counted
    once per process), or of PSS (each shared page split among its sharers: what they really hold)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_full_info().pss if pss else p.memory_info().rss
        except psutil.Error:
            pass  # ended between the listing and the reading
    return total


def run_stage(project: Path, module: str, *args: str) -> dict[str, float]:
    """Run `python -m module args` in `project`: wall seconds, CPU use, and the peak memory of its
    process tree (RSS sampled every 0.1 s; PSS, which costs ~25 ms a process to read, every 1 s)."""
    before = os.times()
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=project, env=env, stderr=subprocess.PIPE)
    peak = {"rss": 0, "pss": 0}

    def sample() -> None:
        watched = psutil.Process(proc.pid)
        tick = 0
        while proc.poll() is None:
            try:
                peak["rss"] = max(peak["rss"], _tree_memory(watched, pss=False))
                if tick % 10 == 0:
                    peak["pss"] = max(peak["pss"], _tree_memory(watched, pss=True))
            except psutil.Error:
                return
            tick += 1
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    _, err = proc.communicate()
    sampler.join()
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{module} failed (exit {proc.returncode}): {err.decode().strip().splitlines()[-1:]}")
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {
        "wall_s": wall,
        "cpu_use": cpu / wall / os.cpu_count(),
        "peak_rss_mb": peak["rss"] / 2**20,
        "peak_pss_mb": peak["pss"] / 2**20,
    }


def du_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def measure_count(work: Path, photos: Path, count: int) -> dict[str, dict[str, float]]:
    """Download and preprocess the first `count` photos in a fresh project; the figures per stage."""
    source = work / f"mirflickr_{count}"
    source.mkdir()
    for i in range(count):
        os.link(photos / f"im{i + 1}.jpg", source / f"im{i + 1}.jpg")
    project = work / f"project_{count}"
    project.mkdir()
    (project / "params.yaml").write_text(
        f"data:\n  train: {source}\n  eval: [sample]\npreprocess:\n  hr_size: {CROP}\n  stride: 128\n"
    )
    figures = {
        "download": run_stage(project, "stages.download", "--out", "data/raw"),
        "preprocess": run_stage(project, "stages.preprocess", "--raw", "data/raw", "--out", "data/prepared"),
    }
    figures["download"]["disk_mb"] = du_mb(project / "data" / "raw")
    figures["preprocess"]["disk_mb"] = du_mb(project / "data" / "prepared")
    manifest = json.loads((project / "data" / "prepared" / "manifest.json").read_text())
    figures["preprocess"]["patches"] = manifest["train"]["num_patches"]
    for stage in figures.values():
        stage["images_per_s"] = count / stage["wall_s"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="2500,25000", help="comma-separated image counts")
    parser.add_argument("--work", type=Path, help="folder for photos and projects (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args()
    counts = sorted(int(n) for n in args.images.split(","))
    work = Path(tempfile.mkdtemp(prefix="srgan-data-scale-", dir=args.work))
    print(f"{cpu_name()}, {os.cpu_count()} cores; work folder {work}")
    try:
        start = time.perf_counter()
        total = make_photos(work / "photos", counts[-1])
        print(
            f"made {counts[-1]} JPEGs, {total / counts[-1] / 1024:.0f} KiB each on average, "
            f"in {time.perf_counter() - start:.0f} s (not part of the figures)"
        )
        figures: dict[str, object] = {"cpu": cpu_name(), "cores": os.cpu_count()}
        for count in counts:
            figures[str(count)] = by_stage = measure_count(work, work / "photos", count)
            for stage, f in by_stage.items():
                print(
                    f"{count:>6} images  {stage:<10} {f['wall_s']:7.1f} s  {f['images_per_s']:6.1f} img/s  "
                    f"CPU use {f['cpu_use']:.2f}  peak RSS {f['peak_rss_mb']:5.0f} MB (PSS {f['peak_pss_mb']:5.0f})  "
                    f"disk {f['disk_mb']:6.0f} MB"
                )
        small, large = (figures[str(n)] for n in (counts[0], counts[-1]))
        for stage in ("download", "preprocess"):
            growth = {k: large[stage][k] / small[stage][k] for k in ("wall_s", "peak_rss_mb", "peak_pss_mb", "disk_mb")}
            print(
                f"{stage}: ×{counts[-1] / counts[0]:.0f} images → wall ×{growth['wall_s']:.2f}, "
                f"peak RSS ×{growth['peak_rss_mb']:.2f} (PSS ×{growth['peak_pss_mb']:.2f}), "
                f"disk ×{growth['disk_mb']:.2f}"
            )
        shards = work / f"project_{counts[-1]}" / "data" / "prepared" / "train"
        step = step_rate("cpu")
        figures["srresnet_steps_per_s"] = step
        print(f"SRResNet update, 64→256, batch 8: {step:.3f} steps/s on this CPU")
        for workers in (1, 2):
            rate = loader_rate(shards, workers)
            figures[f"loader_{workers}_batches_per_s"] = rate
            print(
                f"loader, runtime.workers={workers}: {rate:.1f} batches/s = {rate / step:.0f}× the update's rate "
                f"({'PASS' if rate >= 10 * step else 'below 10×'})"
            )
        if args.json:
            print(json.dumps(figures))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
