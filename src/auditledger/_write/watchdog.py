"""A client-side deadline for blocking database calls.

psycopg's synchronous calls have no timeout of their own, and across a network partition a
server-side ``statement_timeout`` never arrives. The watchdog runs an abort action (for
PostgreSQL: shut the socket down) when a call overruns, so the writer never waits forever.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator


class Watchdog:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._action: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None
        self.fired = 0

    @contextlib.contextmanager
    def deadline(self, seconds: float, action: Callable[[], None]) -> Iterator[None]:
        with self._cond:
            self._deadline = time.monotonic() + seconds
            self._action = action
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="auditledger-watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        try:
            yield
        finally:
            # The action runs under the same lock, so once this block is left it cannot fire
            # on a call that already finished.
            with self._cond:
                self._deadline = None
                self._action = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Inside ``deadline``: the time spent in this block does not count against it."""
        with self._cond:
            remaining = None if self._deadline is None else self._deadline - time.monotonic()
            self._deadline = None
        try:
            yield
        finally:
            with self._cond:
                if remaining is not None and self._action is not None:
                    self._deadline = time.monotonic() + remaining
                    self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while True:
                if self._deadline is None:
                    self._cond.wait(60.0)
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                action, self._deadline, self._action = self._action, None, None
                if action is not None:
                    self.fired += 1
                    with contextlib.suppress(Exception):
                        action()
