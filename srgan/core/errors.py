"""The one exception type users see.

Every expected failure (bad params, a missing file, a corrupt image, a failed download) raises
`SrganError` with a one-line message that names the file or key and what to do. Stage entry
points and the CLI turn it into that line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])


class SrganError(Exception):
    """An expected, user-facing failure; its message is the whole explanation."""


class Refused(SrganError):
    """A request a served model will not answer; `status` is the HTTP status it deserves: 400
    (the request's fault), 503 (out of memory), 504 (past the server's time limit)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def exit_on_error(main: F) -> F:
    """Wrap an entry point so a `SrganError` prints one line and exits with status 2, and Ctrl-C
    prints one line and exits with 130 (128 + SIGINT, as shells report it).

    A `KeyboardInterrupt` raised with a message (what was saved, how to resume) prints that
    message; Python's own, from a Ctrl-C anywhere else, prints "interrupted".
    """

    @wraps(main)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return main(*args, **kwargs)
        except SrganError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt as err:
            print(str(err) or "interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper  # type: ignore[return-value]
