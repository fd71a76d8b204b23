"""Per-image work on a pool of processes, results in task order (preprocess decodes and cuts with it).

Ordered results keep the bytes written independent of which worker finished first, so a seed and
an input give the same shards whatever `preprocess.workers` is.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from tqdm import tqdm

Task = TypeVar("Task")
Result = TypeVar("Result")


class Workers:
    """Runs per-image work on `count` processes, or in-process for one; results in task order."""

    def __init__(self, count: int) -> None:
        self.count = count
        # spawn, not fork: workers must not inherit the parent's threads (tqdm's monitor, BLAS or
        # torch pools when called from a test or notebook). One worker works in-process, so a
        # single core pays no process start-up or pickling. Workers ignore SIGINT: a terminal's
        # Ctrl-C reaches the whole process group, and only the main process should answer it
        # (one message, the pool terminated), not each worker with a traceback.
        pool = multiprocessing.get_context("spawn").Pool
        ignore_ctrl_c = (signal.SIGINT, signal.SIG_IGN)
        self.pool = pool(count, initializer=signal.signal, initargs=ignore_ctrl_c) if count > 1 else None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.terminate()

    def map(self, fn: Callable[[Task], Result], tasks: Sequence[Task], desc: str) -> Iterator[Result]:
        """`fn` over `tasks` with a progress bar. Ordered `imap`: the bytes written never depend
        on which worker finished first."""
        if self.pool is None:
            results: Iterator[Result] = map(fn, tasks)
        else:
            # Chunks of a few tasks: fewer pipe round trips, which dominate for small images on a
            # busy machine, while a chunk of DIV2K-sized images' patches stays about 200 MB.
            results = self.pool.imap(fn, tasks, chunksize=max(1, min(8, len(tasks) // (8 * self.count))))
        return iter(tqdm(results, total=len(tasks), desc=desc, unit="img"))
