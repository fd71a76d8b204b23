"""A training run's curve points and images, sent to the tracking store in the background.

A tracking server restarts, or its database does, while a stage trains for an hour. Training
must neither wait for it nor lose what it logged meanwhile: `Outbox.put` only queues, and one
thread sends the queue in order, retrying what failed for a reason that waiting may cure, until
the server takes it. Each item carries the time it was logged, so a retry of a point the server
had already stored before the connection broke is stored once (MLflow keys a metric point by
key, step, timestamp and value). If the store stays away longer than `patience_s`, `lost` says
so and the stage stops at its next log step with a checkpoint, which also holds the items not
yet sent (`unsent`), so the next execution sends them first.

Items are plain data (`weights_only` checkpoints hold them): {"kind": "metrics", "step",
"timestamp" (ms), "metrics": {key: value}} and {"kind": "image", "step", "timestamp", "key",
"image": uint8 (H, W, 3) RGB tensor}.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

Item = dict[str, Any]


class Outbox:
    """Queue items and send them, oldest first, in a daemon thread.

    `send(item, retry)` delivers one item (`retry`: an earlier attempt failed, so the item may be
    half-stored already); `transient(err)` says whether a failure is worth retrying. Any other
    failure (a refused login) ends the sending at once, as an outage past `patience_s` does.
    """

    def __init__(
        self,
        send: Callable[[Item, bool], None],
        transient: Callable[[Exception], bool],
        patience_s: float,
    ) -> None:
        self._send, self._transient, self.patience_s = send, transient, patience_s
        self._items: deque[Item] = deque()
        self._wake = threading.Condition()
        self._closing = False
        self._failing_since: float | None = None
        self._failure = ""  # the last error's first line
        self._fatal: Exception | None = None
        self._thread = threading.Thread(target=self._drain, name="srgan-outbox", daemon=True)
        self._thread.start()

    def put(self, item: Item) -> None:
        with self._wake:
            self._items.append(item)
            self._wake.notify()

    def unsent(self) -> list[Item]:
        """The items the store has not confirmed, oldest first."""
        with self._wake:
            return list(self._items)

    @property
    def lost(self) -> str:
        """Why sending has given up ("" while it has not): the store refused an item, or has
        failed every attempt for longer than `patience_s`."""
        with self._wake:
            if self._fatal is not None:
                return str(self._fatal).splitlines()[0] if str(self._fatal) else type(self._fatal).__name__
            if self._failing_since is not None and time.monotonic() - self._failing_since > self.patience_s:
                return f"no answer for {time.monotonic() - self._failing_since:.0f} s ({self._failure})"
            return ""

    @property
    def fatal(self) -> Exception | None:
        return self._fatal

    def close(self) -> None:
        """Wait until every item is sent or sending has given up (`lost`), then stop the thread."""
        with self._wake:
            while self._items and not self.lost:
                self._wake.wait(timeout=0.5)
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout=5)

    def _drain(self) -> None:
        retry, pause = False, 0.5
        while True:
            with self._wake:
                while not self._items and not self._closing:
                    self._wake.wait()
                if self._closing or self._fatal is not None:
                    return
                item = self._items[0]
            try:
                self._send(item, retry)
            except Exception as err:  # noqa: BLE001 - the store's errors come in many types; sorted by transient()
                with self._wake:
                    if not self._transient(err):
                        self._fatal = err
                        self._wake.notify_all()
                        return
                    self._failing_since = self._failing_since or time.monotonic()
                    self._failure = (str(err).splitlines() or [type(err).__name__])[0][:200]
                    self._wake.wait(timeout=pause)  # close() may end the wait early
                retry, pause = True, min(pause * 2, 5.0)
                continue
            with self._wake:
                self._items.popleft()
                self._failing_since, retry, pause = None, False, 0.5
                self._wake.notify_all()
