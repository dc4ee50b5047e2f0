"""Storing a prepared batch: under the write deadline, split in halves when the database
refuses a row, the refused row quarantined, conflicts re-checked, the outcome counted."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from .._chain.canonical import Sealed, seal
from .._db.rows import QuarantineRow, Row
from .._sinks.base import ErrorKind, Sink, SinkError
from .backoff import Health
from .capture import Captured
from .prepare import Preparer
from .stats import Counters, Reporter
from .watchdog import Watchdog

# (rows, quarantined, rows resolved and sealed ahead or None): a batch ready for the sink
Ready = tuple[list[Row], list[QuarantineRow], list[Sealed] | None]


class Preparation:
    """A batch's preparation, run at most once: while the database stores the batch before
    it (see ``Sink.write``'s ``meanwhile``), or when the writer needs it."""

    __slots__ = ("_error", "_make", "_ready")

    def __init__(self, make: Callable[[], Ready]) -> None:
        self._make: Callable[[], Ready] | None = make
        self._ready: Ready | None = None
        self._error: Exception | None = None

    def run(self) -> None:
        """Never raises: an error is kept for ``result()``, whose caller handles it."""
        make, self._make = self._make, None
        if make is None:
            return
        try:
            self._ready = make()
        except Exception as exc:  # noqa: BLE001 - re-raised by result(), on the writer's path
            self._error = exc

    def result(self) -> Ready:
        self.run()
        if self._error is not None:
            raise self._error
        assert self._ready is not None
        return self._ready


class Storer:
    """Hands batches to the sink. Raises ``SinkError`` only when the database cannot take a
    batch now (the caller spools it); every other outcome is stored, quarantined or counted."""

    def __init__(
        self,
        sink_factory: Callable[[], Sink],
        preparer: Preparer,
        write_timeout: float,
        counters: Counters,
        health: Health,
        reporter: Reporter,
    ) -> None:
        self._sink_factory = sink_factory
        self._preparer = preparer
        self._write_timeout = write_timeout
        self._counters = counters
        self._health = health
        self._reporter = reporter
        self._watchdog = Watchdog()
        self._sink: Sink | None = None
        self._own_work = 0.0  # seconds of the current write spent on the writer's own work

    def sink(self) -> Sink:
        if self._sink is None:
            self._sink = self._sink_factory()
        return self._sink

    def ready(self, ids: list[uuid.UUID], batch: list[Captured]) -> Ready:
        """Rows for the sink; when every workspace is in the sink's committed cache, also
        resolved and sealed (canonical form), so the writer thread has less to do."""
        rows, quarantined = self._preparer.prepare(ids, batch)
        sink = self._sink
        resolved = None if sink is None or not rows else sink.resolve_from_cache(rows)
        if resolved is None:
            return rows, quarantined, None
        return resolved, quarantined, seal(resolved)

    def tick(self, now: float) -> None:
        sink = self.sink()
        try:
            with self._watchdog.deadline(self._write_timeout, sink.abort):
                sink.tick(now)
        except SinkError as exc:
            self._health.failed(exc, 0)

    def prepare_and_store(
        self,
        ids: list[uuid.UUID],
        batch: list[Captured],
        *,
        replay: bool,
        prepared: Preparation | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> None:
        """Store a batch; raises SinkError only when the database cannot take it now."""
        try:
            sealed = None
            if prepared is None:
                rows, quarantined = self._preparer.prepare(ids, batch)
            else:
                rows, quarantined, sealed = prepared.result()
            self.store(rows, quarantined, replay=replay, sealed=sealed, meanwhile=meanwhile)
        except SinkError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must cost one event, not a batch
            self._reporter.report(
                "internal",
                f"auditledger writer error ({type(exc).__name__}); storing the batch event by "
                "event",
                level=logging.ERROR,
            )
            for event_id, event in zip(ids, batch, strict=True):
                self._store_alone(event_id, event, replay=replay)

    def _store_alone(self, event_id: uuid.UUID, event: Captured, *, replay: bool) -> None:
        """One event, after its batch hit an unexpected error: stored, or quarantined."""
        try:
            rows, quarantined = self._preparer.prepare([event_id], [event])
            self.store(rows, quarantined, replay=replay)
            return
        except SinkError:
            raise
        except Exception as exc:  # noqa: BLE001 - this event is the one the writer cannot handle
            reason = f"auditledger could not prepare this event ({type(exc).__name__})"
        try:
            self.store([], [self._preparer.last_resort_row(event_id, event, reason)], replay=True)
        except SinkError:
            raise
        except Exception:  # noqa: BLE001 - not even the quarantine takes it: count it, say so
            self._counters.drop("unstorable", 1)

    def store(
        self,
        rows: list[Row],
        quarantined: list[QuarantineRow],
        *,
        replay: bool,
        conflict_retry: bool = True,
        sealed: list[Sealed] | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> None:
        """Store a prepared batch; a row the database refuses is quarantined, not the batch.

        ``sealed`` (rows resolved and sealed ahead) is used on this first attempt only: a
        retry and each half of a split batch resolve and seal again in the sink.
        ``meanwhile`` is handed to the sink's write (see ``Sink.write``); the watchdog's
        deadline is paused while it runs, since it is the writer's work, not the database's.
        """
        sink = self.sink()
        started = time.monotonic()
        self._own_work = 0.0
        try:
            with self._watchdog.deadline(self._write_timeout, sink.abort):
                written, kept = sink.write(
                    rows,
                    quarantined,
                    replay=replay,
                    sealed=sealed,
                    meanwhile=None if meanwhile is None else self._paused(meanwhile),
                )
        except SinkError as exc:
            if exc.kind is ErrorKind.CONFLICT and conflict_retry:
                # Another writer (a replay elsewhere, or a stuck write that finally committed)
                # stored some of these events between our check and our insert: check again.
                self.store(rows, quarantined, replay=True, conflict_retry=False)
                return
            if exc.kind is ErrorKind.CONFLICT:
                raise SinkError(ErrorKind.TRANSIENT, exc.code) from exc
            if exc.kind is not ErrorKind.DATA:
                raise
            self._bisect(rows, quarantined, exc, replay=replay)
            return
        # The database's time: the next batch's preparation, done meanwhile, is not its.
        self._counters.stored(written, kept, time.monotonic() - started - self._own_work)
        self._health.recovered()

    def _bisect(
        self, rows: list[Row], quarantined: list[QuarantineRow], exc: SinkError, *, replay: bool
    ) -> None:
        """The database refused a row of this batch: store each half, down to the one row,
        which is quarantined with the database's reason."""
        if len(rows) + len(quarantined) <= 1:
            if rows:
                reason = f"refused by the database ({exc.code})"
                quarantine = [self._preparer.quarantine_from_row(rows[0], reason)]
                self.store([], quarantine, replay=True)
            else:
                # Even its quarantine row is refused (a rule of the user's own schema).
                self._counters.drop("refused", len(quarantined))
            return
        if rows:
            half = len(rows) // 2
            self.store(rows[:half], quarantined, replay=replay)
            self.store(rows[half:], [], replay=replay)
        else:
            half = len(quarantined) // 2
            self.store([], quarantined[:half], replay=replay)
            self.store([], quarantined[half:], replay=replay)

    def _paused(self, work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            started = time.monotonic()
            with self._watchdog.paused():
                work()
            self._own_work += time.monotonic() - started

        return run

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def forget_after_fork(self) -> list[object]:
        """The parent's connection: returned to be kept alive (never closed from the child)."""
        orphans: list[object] = [] if self._sink is None else [self._sink]
        self._sink = None
        self._watchdog = Watchdog()
        return orphans
