"""Whether the database answers, and when to try it again after it did not."""

from __future__ import annotations

import logging
import random
import time

from .._sinks.base import ErrorKind, SinkError
from .stats import Reporter

log = logging.getLogger("auditledger")

_MAX_BACKOFF = 30.0


class Health:
    """The writer's view of the database: healthy, or failed and retried with a growing,
    jittered delay (as psycopg_pool's ``AttemptWithBackoff``)."""

    def __init__(self, reporter: Reporter) -> None:
        self._reporter = reporter
        self.healthy = True
        self.last_error: str | None = None
        self.next_attempt = 0.0
        self._backoff = 0.0

    def retry_due(self, now: float) -> bool:
        return now >= self.next_attempt

    def failed(self, exc: SinkError, count: int) -> None:
        self.healthy = False
        self.last_error = f"{exc.kind.value}:{exc.code}"
        if exc.kind is ErrorKind.PERMANENT:
            self._backoff = _MAX_BACKOFF
            self._reporter.report(
                "permanent",
                f"auditledger: database write failed permanently ({exc.code}): check the URL, "
                "credentials and `auditledger db upgrade`; events are kept in the spool",
                level=logging.ERROR,
            )
        else:
            self._backoff = min(_MAX_BACKOFF, max(0.1, self._backoff * 2))
            spooled = f"; {count} events spooled" if count else ""
            self._reporter.report(
                "transient",
                f"auditledger: database write failed ({exc.code}){spooled}, "
                f"retrying in {self._backoff:.1f}s",
            )
        jitter = random.uniform(0.8, 1.2)  # noqa: S311 - spreading retries, not security
        self.next_attempt = time.monotonic() + self._backoff * jitter

    def recovered(self) -> None:
        if not self.healthy:
            log.warning("auditledger: the database is reachable again")
        self.healthy = True
        self._backoff = 0.0
        self.last_error = None
