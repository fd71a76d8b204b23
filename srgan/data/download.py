"""The download stage's library: fetch archives, extract them safely, and write each source's folder.

Every source lands in `<raw>/<slug>/` (see `sources.raw_dir`) as its image files plus a
`manifest.json` naming each file with its size and sha256, and each skipped file with the reason.

Two constraints shape this module:
- `dvc repro` deletes a stage's declared outs before it runs, so downloads (and their partial
  files, which later runs resume) live in a cache folder outside `data/raw`.
- Archives come from the network and are untrusted: `srgan.data.archive` extracts them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import time
from pathlib import Path

import requests
import skimage.data
from tqdm import tqdm

from srgan.core.atomic import write_json
from srgan.core.errors import SrganError
from srgan.data import sources
from srgan.data.archive import Skipped, extract
from srgan.data.imageio import IMAGE_EXTENSIONS, is_image

CHUNK_BYTES = 1 << 20
MAX_ATTEMPTS = 5  # connections per fetch; each one after a drop resumes where the last stopped
RETRY_WAIT_S = 1.0
TIMEOUT_S = (15, 60)  # (connect, read); a read that stalls mid-body is retried like a drop
MANIFEST = "manifest.json"

# A mid-body failure: the bytes so far are on disk, so the next connection resumes from them.
_DROPPED = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)")


def _cannot_download(url: str, why: str) -> SrganError:
    return SrganError(
        f"cannot download {url} ({why}); download it by hand and set data.train or data.eval to the "
        f"folder of its images, e.g. dvc exp run -S 'data.eval=[/path/to/Set5]'"
    )


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file read in chunks, so multi-GB archives never sit in memory."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _content_range(resp: requests.Response) -> tuple[int | None, int | None]:
    """(first byte, total size) from a Content-Range header; None where absent or `*`."""
    match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", ""))
    if not match:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def _get(url: str, part: Path, progress: bool) -> bool:
    """One HTTP request that appends to `part`, resuming from its size. True when `part` is complete.

    A connection that cannot be made (refused, DNS, timeout) or an HTTP error raises SrganError at
    once: retrying will not help an offline machine. A connection dropped mid-body returns False,
    keeping the bytes received, so the caller can resume.
    """
    offset = part.stat().st_size if part.exists() else 0
    # identity: with gzip transfer encoding requests would hand us decoded bytes, and byte
    # offsets into the decoded stream are not offsets into the file the server ranges over.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = requests.get(url, headers=headers, stream=True, timeout=TIMEOUT_S)
    except requests.RequestException as err:
        raise _cannot_download(url, type(err).__name__) from None
    with resp:
        if resp.status_code == 416:
            # Nothing left to send from `offset`: complete if the server's size is ours.
            _, total = _content_range(resp)
            if total == offset:
                return True
            part.unlink(missing_ok=True)
            return False
        if resp.status_code >= 400:
            raise _cannot_download(url, f"HTTP {resp.status_code} {resp.reason}")
        if resp.status_code == 206:
            start, total = _content_range(resp)
            if start != offset:
                part.unlink(missing_ok=True)
                return False
        else:
            # A 200 answers with the whole file (the server ignored Range): start over.
            offset = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        return _append_body(resp, part, offset, total, url.rsplit("/", 1)[-1] if progress else None)


def _append_body(resp: requests.Response, part: Path, offset: int, total: int | None, bar_label: str | None) -> bool:
    """Write the response body to `part` from `offset` on, with a progress bar unless `bar_label`
    is None; True when `part` then has `total` bytes (or the size is unknown), False after a drop."""
    with (
        open(part, "ab" if offset else "wb") as out,
        tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=bar_label,
            disable=bar_label is None,
            file=sys.stderr,
        ) as bar,
    ):
        try:
            for chunk in resp.iter_content(CHUNK_BYTES):
                out.write(chunk)
                bar.update(len(chunk))
        except _DROPPED:
            return False
    # A body that ends short without an error is a drop too.
    return total is None or part.stat().st_size == total


def fetch(url: str, dest: Path, md5: str | None = None, progress: bool = True) -> Path:
    """Download `url` to `dest`, resuming a partial download and checking `md5` when known.

    `dest` only ever holds a complete (and, with `md5`, verified) file: bytes arrive in
    `<dest>.part`, which survives interruptions and is renamed onto `dest` once checked. So an
    existing `dest` is returned without touching the network. A checksum mismatch moves the
    download to `<dest>.bad` (for inspection; the next run starts afresh) and raises SrganError.
    """
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, MAX_ATTEMPTS + 1):
        if _get(url, part, progress):
            break
        if attempt < MAX_ATTEMPTS:
            time.sleep(RETRY_WAIT_S * attempt)
    else:
        raise _cannot_download(url, f"connection dropped {MAX_ATTEMPTS} times; run again to resume")
    if md5 is not None:
        actual = file_digest(part, "md5")
        if actual != md5:
            bad = dest.with_name(dest.name + ".bad")
            os.replace(part, bad)
            raise SrganError(f"{dest.name} from {url}: md5 is {actual}, expected {md5}; the download is kept as {bad}")
    os.replace(part, dest)
    return dest


def write_manifest(folder: Path, source: str, skipped: Skipped, archive_sha256: str | None = None) -> dict:
    """Write `<folder>/manifest.json` listing every file now in `folder` with its size and sha256.

    It lists what is on disk rather than what was meant to be written, so it is the truth that
    preprocess and reviewers can check against. Files are sorted so equal folders give equal bytes.
    """
    files = [
        {
            "file": path.relative_to(folder).as_posix(),
            "size": path.stat().st_size,
            "sha256": file_digest(path, "sha256"),
        }
        for path in sorted(folder.rglob("*"), key=lambda p: p.relative_to(folder).as_posix())
        if path.is_file() and path.relative_to(folder).as_posix() != MANIFEST
    ]
    manifest: dict = {"source": source, "files": files, "skipped": sorted(skipped, key=lambda s: s["file"])}
    if archive_sha256 is not None:
        manifest["archive_sha256"] = archive_sha256
    write_json(folder / MANIFEST, manifest)
    return manifest


def cache_path(cache_root: Path, url: str) -> Path:
    """Where `url` is downloaded: one folder per URL, so two `images.zip` never collide."""
    return cache_root / hashlib.sha256(url.encode()).hexdigest()[:12] / url.rsplit("/", 1)[-1]


def _copy_sample(role: sources.Role, folder: Path) -> None:
    photos = Path(skimage.data.__file__).parent
    for name in sources.SAMPLE_TRAIN if role == "train" else sources.SAMPLE_EVAL:
        if not (photos / name).is_file():
            raise SrganError(f"{photos / name}: missing from this scikit-image install; the sample source needs it")
        shutil.copyfile(photos / name, folder / name)


def _copy_folder(src: Path, folder: Path) -> Skipped:
    skipped: Skipped = []
    for path in sorted(src.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(src)
        if not is_image(path.name):
            skipped.append({"file": rel.as_posix(), "reason": "not an image file extension"})
            continue
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, folder / rel)
    return skipped


def materialize(name: str, out_root: Path, cache_root: Path, *, max_bytes: int) -> list[Path]:
    """Write source `name` (already checked by `sources.check_source`) under `out_root`.

    Returns the folders written: both role folders for `sample`, else the one source folder.
    Archives are downloaded into `cache_root`, which must lie outside `out_root`. A failure can
    leave a partial folder: the download stage writes into a staging folder (`atomic_dir`).
    """
    if name == "sample":
        folders = []
        for role in ("train", "eval"):
            folder = sources.raw_dir(out_root, name, role)
            folder.mkdir(parents=True)
            _copy_sample(role, folder)
            write_manifest(folder, name, [])
            folders.append(folder)
        return folders
    folder = sources.raw_dir(out_root, name, "train")  # the same folder for either role
    folder.mkdir(parents=True)
    skipped: Skipped = []
    archive_sha256 = None
    if name in sources.REGISTRY:
        for archive in sources.REGISTRY[name].archives:
            path = fetch(archive.url, cache_path(cache_root, archive.url), md5=archive.md5)
            skipped += extract(path, folder, archive.members, max_bytes=max_bytes)
    elif sources.is_url(name):
        path = fetch(name, cache_path(cache_root, name))
        archive_sha256 = file_digest(path, "sha256")
        skipped = extract(path, folder, max_bytes=max_bytes)
    else:
        skipped = _copy_folder(Path(name).expanduser(), folder)
    manifest = write_manifest(folder, name, skipped, archive_sha256)
    if not manifest["files"]:
        raise SrganError(f"source {name!r}: no image files found (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    return [folder]
