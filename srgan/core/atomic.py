"""Atomic writes: a temporary file (or folder) beside the target, then a rename onto it.

A process killed at any moment leaves either the old file or the new one, never a half-written
file under a path that DVC would cache as good.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success, rename it onto `path`.

    `suffix` keeps the extension for writers that choose the format from it (Pillow, numpy).
    On failure the temporary file is removed and `path` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    # mkstemp creates 0600 files; give outputs the usual mode (0666 less the umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_name, 0o666 & ~umask)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_with(path: str | os.PathLike[str], writer: Callable[[IO[bytes]], Any]) -> None:
    """Atomically write `path` by calling `writer` on an open binary file."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        writer(handle)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Atomically write raw bytes."""
    write_with(path, lambda handle: handle.write(data))


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write UTF-8 text."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write JSON with sorted keys and a final newline, so equal data give equal bytes."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextmanager
def atomic_dir(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty `.<name>.<pid>.tmp` folder beside `out`; when the block succeeds it replaces
    `out` (two renames, so there is never a partial `out`); when it fails it is removed.

    Folders left beside `out` by killed runs are removed first.
    """
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        shutil.rmtree(stale)
    staging = target.parent / f".{target.name}.{os.getpid()}.tmp"
    staging.mkdir()
    try:
        yield staging
        if target.exists():
            previous = target.parent / f".{target.name}.{os.getpid()}.old.tmp"
            os.rename(target, previous)
            os.rename(staging, target)
            shutil.rmtree(previous)
        else:
            os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
