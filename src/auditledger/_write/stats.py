"""Where every event is: the counters behind ``AuditStats``, and problems reported sparingly."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

log = logging.getLogger("auditledger")

_REPORT_EVERY = 60.0  # seconds between reports of the same ongoing problem


@dataclass(frozen=True)
class AuditStats:
    """Where every event logged through one AuditLogger is."""

    enqueued: int
    written: int
    spooled: int
    replayed: int
    quarantined: int
    dropped: dict[str, int]
    queue_depth: int
    in_flight: int  # taken from the queue, being prepared or stored right now
    spool_bytes: int
    spool_segments: int
    flush_latency_seconds: float | None
    flush_latency_max_seconds: float | None
    last_error: str | None
    healthy: bool


class Reporter:
    """Logs a problem at most once a minute per kind: never once per event."""

    def __init__(self) -> None:
        self._reported: dict[str, float] = {}

    def report(self, key: str, message: str, *, level: int = logging.WARNING) -> None:
        now = time.monotonic()
        if now < self._reported.get(key, 0.0):
            return
        self._reported[key] = now + _REPORT_EVERY
        log.log(level, message)


class Counters:
    """The numbers of ``AuditStats``. The writer thread updates them; ``spooled``,
    ``dropped`` and ``outside_queue`` are also updated by callers, under the spool's lock."""

    def __init__(self, reporter: Reporter) -> None:
        self._reporter = reporter
        self.popped = 0
        self.outside_queue = 0  # calls that went straight to the spool (queue full)
        self.drops_answered = 0  # drops a flush() has already answered False for
        self.written = 0
        self.spooled = 0
        self.replayed = 0
        self.quarantined = 0
        self.dropped: dict[str, int] = {}
        self.latency: float | None = None
        self.latency_max: float | None = None

    def drop(self, reason: str, count: int) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count
        self._reporter.report(
            f"drop:{reason}",
            f"auditledger: events dropped ({reason}); {self.dropped[reason]} so far",
            level=logging.ERROR,
        )

    def stored(self, written: int, quarantined: int, latency: float) -> None:
        self.latency = latency
        self.latency_max = max(latency, self.latency_max or 0.0)
        self.written += written
        self.quarantined += quarantined
