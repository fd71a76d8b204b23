"""The dataset registry: every named source in one table, and where each lands.

A source name in `data.train` / `data.eval` is one of the registry keys below, the URL of a
.zip/.tar/.tar.gz archive, or a local folder. `download` writes each source to
`<raw>/<slug>/`; `preprocess` reads it back from the same place through `raw_dir`.

A `data.eval` entry may end in `@<degradation>` (`bsd100@jpeg50`, `srgan.data.degrade`): the
same images, downloaded once, with their LR inputs degraded; its eval-set name is the source's
slug with that suffix.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from srgan.core.errors import SrganError
from srgan.data.degrade import check_degradation

Role = Literal["train", "eval"]

# scikit-image ships these photos inside the package; `sample` needs no network.
SAMPLE_EVAL = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg")
SAMPLE_TRAIN = (
    "motorcycle_left.png",
    "motorcycle_right.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
    "camera.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "moon.png",
    "coins.png",
    "cell.png",
)


@dataclass(frozen=True)
class Archive:
    """One archive of a registered source: where it comes from, its checksum, what to keep.

    `members` is a regular expression on the archive's member paths; the part matched by its
    first group becomes the file's path under the source folder.
    """

    url: str
    md5: str
    members: str


@dataclass(frozen=True)
class Source:
    name: str
    description: str
    archives: tuple[Archive, ...]


_EDSR_BENCHMARK = "https://cv.snu.ac.kr/research/EDSR/benchmark.tar"
_EDSR_BENCHMARK_MD5 = "4ace41d33c2384b97e6b320cd0afd6ba"


def _benchmark(name: str, folder: str) -> Source:
    member = rf"benchmark/{folder}/HR/([^/]+)"
    return Source(
        name, f"{folder} HR images from EDSR's benchmark.tar", (Archive(_EDSR_BENCHMARK, _EDSR_BENCHMARK_MD5, member),)
    )


REGISTRY: dict[str, Source] = {
    "sample": Source("sample", "photos shipped with scikit-image (offline)", ()),
    "mirflickr25k": Source(
        "mirflickr25k",
        "25,000 Flickr JPEGs",
        (
            Archive(
                "https://press.liacs.nl/mirflickr/mirflickr25k.v3b/mirflickr25k.zip",
                "a23d0a8564ee84cda5622a6c2f947785",
                r"mirflickr/(im\d+\.jpg)",
            ),
        ),
    ),
    "div2k": Source(
        "div2k",
        "DIV2K 800 train + 100 valid HR PNGs",
        (
            Archive(
                "https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip",
                "bdc2d9338d4e574fe81bf7d158758658",
                r"DIV2K_train_HR/([^/]+\.png)",
            ),
            Archive(
                "https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip",
                "9fcdda83005c5e5997799b69f955ff88",
                r"DIV2K_valid_HR/([^/]+\.png)",
            ),
        ),
    ),
    "set5": _benchmark("set5", "Set5"),
    "set14": _benchmark("set14", "Set14"),
    "bsd100": _benchmark("bsd100", "B100"),
    "urban100": _benchmark("urban100", "Urban100"),
}

_ARCHIVE_URL = re.compile(r"^https?://\S+\.(zip|tar|tar\.gz|tgz)$", re.IGNORECASE)


def is_url(name: str) -> bool:
    return name.startswith(("http://", "https://"))


def split_degradation(name: str) -> tuple[str, str | None]:
    """`bsd100@jpeg50` → (`bsd100`, `jpeg50`); a name without such a suffix → (name, None).

    Only a last `@` followed by a word with optional digits splits, so a URL's `user@host` stays."""
    source, sep, degradation = name.rpartition("@")
    if sep and source and re.fullmatch(r"[a-z]+\d*", degradation):
        return source, degradation
    return name, None


def check_source(name: str, key: str) -> None:
    """Fail before any work if `name` is neither a registered source, an archive URL nor a folder,
    or names a degradation that does not exist (or any, for the training source)."""
    name, degradation = split_degradation(name)
    if degradation is not None:
        if key == "data.train":
            raise SrganError(
                f"params: data.train={name}@{degradation}: training pairs take their degradation from "
                "preprocess.degradation; drop the @ part"
            )
        check_degradation(degradation, f"params: {key}={name}@{degradation}")
    if name in REGISTRY:
        return
    if is_url(name):
        if not _ARCHIVE_URL.match(name):
            raise SrganError(f"params: {key}={name!r} is a URL but not of a .zip, .tar or .tar.gz archive")
        return
    if not Path(name).expanduser().is_dir():
        raise SrganError(f"params: {key}={name!r} is not a folder, an archive URL or one of: {', '.join(REGISTRY)}")


def slug(name: str) -> str:
    """The folder name a source lands in under `data/raw/` (and its eval-set name in reports).

    Registered names stay as they are; a URL or folder becomes its last path part plus a short
    hash of the whole name, so two different folders called `images` never collide. A degraded
    eval set keeps its `@<degradation>` suffix.
    """
    name, degradation = split_degradation(name)
    if degradation is not None:
        return f"{slug(name)}@{degradation}"
    if name in REGISTRY:
        return name
    stem = re.sub(r"(\.tar\.gz|\.tgz|\.tar|\.zip)$", "", name.rstrip("/").split("/")[-1], flags=re.IGNORECASE)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) or "source"
    return f"{stem}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def raw_dir(raw_root: str | Path, name: str, role: Role) -> Path:
    """Where `download` put the images of source `name` for `role`.

    Only `sample` differs by role: its train and eval photos are disjoint fixed lists. A degraded
    eval set reads its source's folder.
    """
    name = split_degradation(name)[0]
    base = Path(raw_root) / slug(name)
    return base / role if name == "sample" else base
