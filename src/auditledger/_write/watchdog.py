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
    """``every``/``overrun``: while a call runs longer than ``every`` seconds, ``overrun`` is
    called on the watchdog's thread, then again every ``every`` seconds until the call ends
    (the write-ahead writer uses it to spool what waits behind a stuck write)."""

    def __init__(
        self, every: float | None = None, overrun: Callable[[], None] | None = None
    ) -> None:
        self._cond = threading.Condition()
        self._deadline: float | None = None
        self._action: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None
        self._every = every
        self._overrun = overrun
        self._next_overrun: float | None = None
        self.fired = 0

    @contextlib.contextmanager
    def deadline(self, seconds: float, action: Callable[[], None]) -> Iterator[None]:
        with self._cond:
            now = time.monotonic()
            self._deadline = now + seconds
            self._action = action
            if self._every is not None and self._overrun is not None:
                self._next_overrun = now + self._every
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
                self._next_overrun = None

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
                now = time.monotonic()
                if self._next_overrun is not None and now >= self._next_overrun:
                    self._next_overrun = now + (self._every or 1.0)
                    self._call_overrun()
                    continue
                remaining = self._deadline - now
                if self._next_overrun is not None:
                    remaining = min(remaining, self._next_overrun - now)
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                action, self._deadline, self._action = self._action, None, None
                if action is not None:
                    self.fired += 1
                    with contextlib.suppress(Exception):
                        action()

    def _call_overrun(self) -> None:
        """Outside the lock: the call may end meanwhile, which must not wait for this."""
        overrun = self._overrun
        if overrun is None:
            return
        self._cond.release()
        try:
            with contextlib.suppress(Exception):
                overrun()
        finally:
            self._cond.acquire()
