"""Share this machine's CPU cores among the srgan processes computing on it (`runtime.threads`).

Two processes whose thread pools each take every core starve each other: the OpenMP threads of
one spin and yield while the other's hold the cores, and both crawl (benchmarks/concurrency.py
measures it). With `auto`, each process instead sizes its torch pool to an equal part of the
cores: cores // (srgan processes computing now), at least one. A process that sets a number
keeps it, and still counts as one of the processes.

Each computing process holds an exclusive `flock` on one file in a per-user folder for its
lifetime, so the count is the number of locked files there. The kernel drops a lock when its
process dies, even by SIGKILL, so a crashed job never keeps its part. Files are locked before
they are renamed into view, so a file seen unlocked is stale and is removed. `rebalance()`,
called from the loops that run long (a training step, an upscaled tile), reads the count again
at most once a second: a running job gives up cores when another starts and takes them back
when it ends. This covers `dvc queue start -j N`, DDP ranks on one machine, and a stage beside
`srgan upscale`.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RECHECK_SECONDS = 1.0


def folder() -> Path:
    """Where the lock files live: one folder per user, shared by every project and clone."""
    return Path(tempfile.gettempdir()) / f"srgan-jobs-{os.getuid()}"


def cores() -> int:
    """The cores this process may run on (its affinity mask: `taskset`, cgroup cpusets)."""
    return len(os.sched_getaffinity(0))


def live_jobs() -> int:
    """srgan processes holding a lock now (this one included, once it has claimed); stale files
    of dead processes are removed on the way."""
    count = 0
    for path in folder().glob("*.lock"):
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue  # removed by another process's sweep
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            count += 1  # held: a live process (or this one, through its own descriptor)
        else:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    return count


class Share:
    """This process's claim on the cores: its lock file, and the pool size last set."""

    def __init__(self) -> None:
        folder().mkdir(mode=0o700, exist_ok=True)
        name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging = folder() / f".{name}.tmp"
        self._fd = os.open(staging, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self._path = folder() / f"{name}.lock"
        os.rename(staging, self._path)
        self.setting: int | str = "auto"
        self.threads = 0
        self._checked = -RECHECK_SECONDS
        atexit.register(self.release)

    def rebalance(self) -> int:
        """Resize the torch pool to this process's part of the cores now; returns the size. Cheap
        between checks (one clock read), so loops call it every iteration."""
        now = time.monotonic()
        if self.setting != "auto" or now - self._checked < RECHECK_SECONDS:
            return self.threads
        self._checked = now
        self._set(max(1, cores() // max(1, live_jobs())))
        return self.threads

    def _set(self, threads: int) -> None:
        if threads != self.threads:
            # Imported here: preprocess's spawned workers import this module and must not load torch.
            import torch

            torch.set_num_threads(threads)
            self.threads = threads

    def release(self) -> None:
        """Give the part back now (also done by the kernel when the process ends)."""
        self._path.unlink(missing_ok=True)
        os.close(self._fd)
        atexit.unregister(self.release)


_share: Share | None = None


def claim(setting: int | str) -> Share:
    """This process's share, claimed on first use; `setting` is `auto` or a fixed thread count."""
    global _share
    if _share is None:
        _share = Share()
    _share.setting = setting
    _share._checked = -RECHECK_SECONDS
    if setting == "auto":
        _share.rebalance()
    else:
        _share._set(int(setting))
    return _share


@contextmanager
def computing(setting: int | str = "auto") -> Iterator[Share]:
    """This process's share for one piece of work: claimed for it and given back after, so that a
    long-lived process that is mostly idle (a model server's worker) leaves the cores to others
    between pieces; a process that already holds a share (a stage) keeps it as it is."""
    if _share is not None:
        yield _share
        return
    share = claim(setting)
    try:
        yield share
    finally:
        release()


def release() -> None:
    """Give this process's share back, if it holds one: it computes no more."""
    global _share
    if _share is not None:
        _share.release()
        _share = None
