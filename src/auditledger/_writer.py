"""The background writer: a bounded queue, one thread, batches, and the spool behind them.

Callers only append a captured event to a deque (no lock, no I/O). The writer thread takes
batches, gives them ids, prepares them and hands them to the sink under a client-side deadline.
A batch the sink cannot take goes to this process's spool; when the database answers again the
spool is replayed first, through the same sink, so order is kept and replays are idempotent.
When the queue is full, callers append to the spool themselves rather than drop the event.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from ._capture import Captured
from ._chain import Sealed, seal
from ._ids import uuid7_batch, uuid7_from_ns
from ._prepare import Preparer, QuarantineRow, Row
from ._sink import ErrorKind, Sink, SinkError
from ._spool import (
    SegmentReplay,
    SegmentWriter,
    claim_segments,
    encode_event,
    has_claimable_segments,
    segment_count,
    spool_bytes,
)
from ._spool_frames import COMMIT, EVENT
from ._watchdog import Watchdog

log = logging.getLogger("auditledger")

_MAX_BACKOFF = 30.0
_REPORT_EVERY = 60.0  # seconds between reports of the same ongoing problem


class State(Enum):
    UNOPENED = "unopened"
    RUNNING = "running"
    CLOSED = "closed"


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


# Typed as plain State: another thread's close() can change the state between two reads.
_CLOSED: State = State.CLOSED


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


@dataclass
class WriterOptions:
    queue_size: int = 10_000
    batch_size: int = 2_000
    flush_interval: float = 0.2
    write_timeout: float = 10.0
    write_ahead: bool = False
    spool_max_bytes: int = 1024**3
    replay_interval: float = 30.0
    # The database's fingerprint: segments carry it, and only its own segments are replayed.
    database: str = "default"


@dataclass
class _FlushRequest:
    deadline: float
    # For close(): while the database is down there is no point waiting once everything is
    # in the spool; it is answered (False) then instead of at its deadline.
    settle_when_spooled: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False


class Writer:
    def __init__(
        self,
        sink_factory: Callable[[], Sink],
        preparer: Preparer,
        spool_dir: Path,
        options: WriterOptions,
    ) -> None:
        self._sink_factory = sink_factory
        self._preparer = preparer
        self.spool_dir = spool_dir
        self.options = options
        self.state = State.UNOPENED
        self._init_runtime()

    def _init_runtime(self) -> None:
        """State that belongs to one process (a forked child starts it afresh)."""
        self._queue: deque[Captured] = deque()
        # Guards spool segments and the counters callers touch. Re-entrant: a __del__ run by
        # the garbage collector on the writer thread may log an event into a full queue.
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._requests: list[_FlushRequest] = []
        # Re-entrant: a SIGTERM handler may call close() (and so flush()) while the main
        # thread was inside flush() holding it.
        self._requests_lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop = False
        # With write-ahead, what waits behind a write that overruns flush_interval is spooled
        # while it waits (see _spool_behind_stuck_write), so a SIGKILL during a hang loses
        # about one flush_interval, not everything queued behind it.
        self._watchdog = (
            Watchdog(self.options.flush_interval, self._spool_behind_stuck_write)
            if self.options.write_ahead
            else Watchdog()
        )
        # Held batches (by id) already in the spool: written ahead, or spooled while stuck.
        self._held_in_spool: set[int] = set()
        self._held_spooled_while_stuck: set[int] = set()
        self._sink: Sink | None = None
        database = self.options.database
        self._wal = SegmentWriter(
            self.spool_dir, "w", database, committed_only=self.options.write_ahead
        )
        self._overflow = SegmentWriter(self.spool_dir, "o", database)
        # Batches taken from the queue and not yet stored or spooled: the one being stored
        # and the next, being prepared meanwhile. close() spools them if the writer is stuck.
        self._held: list[tuple[list[uuid.UUID], list[Captured]]] = []
        self._own_work = 0.0  # seconds of the current write spent on the writer's own work
        # counters
        self._popped = 0
        self._outside_queue = 0  # calls that went straight to the spool (queue full)
        self._drops_answered = 0  # drops a flush() has already answered False for
        self._written = 0
        self._spooled = 0
        self._replayed = 0
        self._quarantined = 0
        self._dropped: dict[str, int] = {}
        self._latency: float | None = None
        self._latency_max: float | None = None
        self._last_error: str | None = None
        # health
        self._healthy = True
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._next_scan = 0.0
        self._reported: dict[str, float] = {}
        self._spool_bytes_estimate = 0
        self._spool_rescan_at = 0.0

    # ---- caller side -------------------------------------------------------------------

    def submit(self, event: Captured) -> None:
        queue = self._queue
        if len(queue) < self.options.queue_size and self.state is not State.CLOSED:
            queue.append(event)
            if self._thread is None:
                self.start()
            elif len(queue) == self.options.batch_size:
                self._wake.set()
            if self.state is _CLOSED:
                # close() finished between our check and our append: nobody would ever take
                # this event from the queue, so it goes to the spool now.
                self._spool_leftovers()
            return
        self._spill(event)

    def _spill(self, event: Captured) -> None:
        """The queue is full (or the writer closed): the event goes to the spool, not away."""
        with self._lock:
            self._outside_queue += 1
            if self._spool_full():
                self._drop("spool_full", 1)
                return
            event_id = str(uuid7_from_ns(event[0], os.urandom(10)))
            try:
                self._spool_bytes_estimate += self._overflow.append(
                    EVENT, [encode_event(event_id, event, self._preparer.scrubber.scrub)]
                )
                if self.state is State.CLOSED:
                    # No writer will seal it later: release it now so another logger on this
                    # spool directory (or the next process) can replay it.
                    self._overflow.seal()
            except OSError:
                self._drop("spool_unavailable", 1)
                return
            self._spooled += 1

    def count_uncapturable(self) -> None:
        """A call whose values could not be captured at all: counted, never silently lost."""
        with self._lock:
            self._outside_queue += 1
            self._drop("uncapturable", 1)

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            thread = threading.Thread(target=self._run, name="auditledger-writer", daemon=True)
            try:
                thread.start()
            except RuntimeError:
                # The interpreter is shutting down: no thread can start any more. Events
                # still reach the spool through submit(), and the next process replays them.
                self.state = State.CLOSED
                return
            self._thread = thread
            self.state = State.RUNNING

    def flush(self, timeout: float, *, settle_when_spooled: bool = False) -> bool:
        """Wait until everything logged before this call is stored; False at the timeout."""
        if self._thread is None or not self._thread.is_alive():
            return self._nothing_pending()
        request = _FlushRequest(time.monotonic() + timeout, settle_when_spooled)
        with self._requests_lock:
            self._requests.append(request)
        self._wake.set()
        request.done.wait(timeout)
        return request.ok

    def close(self, timeout: float) -> bool:
        if self.state is State.CLOSED:
            return self._nothing_pending()
        # Keep back the time that spooling what a stuck writer holds takes (~10 µs an event,
        # doubled for a busy machine), so that close() still returns within its timeout.
        held = self.options.queue_size + self.options.batch_size
        timeout -= min(timeout / 2, held * 20e-6)
        deadline = time.monotonic() + timeout
        ok = self.flush(timeout, settle_when_spooled=True)
        self.state = State.CLOSED
        self._stop = True
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                # The writer is stuck on the database: spool what it still holds so a later
                # process replays it (replay drops any copy that did reach the database).
                self._spool_leftovers(include_inflight=True)
                ok = False
        # A call that raced close() may have appended after the writer's last look.
        self._spool_leftovers()
        with self._lock:
            self._overflow.seal()
        return ok and self._nothing_pending()

    def stats(self) -> AuditStats:
        with self._lock:
            spooled = self._spooled
            dropped = dict(self._dropped)
            outside = self._outside_queue
        depth = len(self._queue)
        return AuditStats(
            enqueued=self._popped + depth + outside,
            written=self._written,
            spooled=spooled,
            replayed=self._replayed,
            quarantined=self._quarantined,
            dropped=dropped,
            queue_depth=depth,
            in_flight=sum(len(batch) for _, batch in list(self._held)),
            spool_bytes=spool_bytes(self.spool_dir, self.options.database),
            spool_segments=segment_count(self.spool_dir, self.options.database),
            flush_latency_seconds=self._latency,
            flush_latency_max_seconds=self._latency_max,
            last_error=self._last_error,
            healthy=self._healthy,
        )

    # ---- writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self.options.flush_interval)
            self._wake.clear()
            try:
                self._cycle()
            except Exception as exc:  # noqa: BLE001 - the writer must outlive its own bugs
                self._report(
                    "internal",
                    f"auditledger writer error ({type(exc).__name__})",
                    level=logging.ERROR,
                )
            if self._stop and not self._queue:
                self._finish()
                return

    def _cycle(self) -> None:
        now = time.monotonic()
        if self._replay_due(now):
            self._replay()
        # Only what is queued now: under a steady stream the loop must still reach the flushes.
        self._drain(len(self._queue))
        with self._lock:
            self._overflow.flush()
        self._answer_flushes()
        if self._healthy:
            # Also while idle: scheduled checkpoints must be signed whether or not events
            # arrive. Sinks connect lazily, so a tick with nothing to do costs no connection.
            sink = self._get_sink()
            try:
                with self._watchdog.deadline(self.options.write_timeout, sink.abort):
                    sink.tick(now)
            except SinkError as exc:
                self._failed(exc, 0)

    def _drain(self, limit: int | None) -> None:
        """Store queued batches (about ``limit`` events, or until the queue is empty).

        The next batch is prepared while the database stores this one: the sink runs its
        preparation once the rows are sent, before it waits for the database to finish
        (``Sink.write``'s ``meanwhile``). On the writer's own thread, because a helper thread
        competing for the GIL delays every resumption of the writer after a network wait by
        up to the interpreter's switch interval (5 ms), several times per batch: measured, it
        overlapped nothing. Every path that drains the queue goes through here.
        """
        pending = len(self._queue) if limit is None else limit
        ahead = self._take_and_prepare() if pending > 0 and self._queue else None
        while ahead is not None:
            current = ahead
            pending -= len(current[1])
            more = self._queue and (limit is None or pending > 0)
            ahead = self._take_and_prepare() if more else None
            self._handle_batch(*current, meanwhile=None if ahead is None else ahead[2].run)
            if limit is None and ahead is None and self._queue:
                ahead = self._take_and_prepare()

    def _take_batch(self, into: list[Captured] | None = None) -> list[Captured]:
        queue = self._queue
        batch: list[Captured] = [] if into is None else into
        # Under the lock: the watchdog's thread may be spooling the queue (write-ahead).
        with self._lock:
            try:
                for _ in range(min(len(queue), self.options.batch_size)):
                    batch.append(queue.popleft())
            except IndexError:
                pass  # close() took the rest for the spool (a stuck writer came back)
            self._popped += len(batch)
        return batch

    def _take_and_prepare(self) -> tuple[list[uuid.UUID], list[Captured], Preparation]:
        # Registered as held before the events leave the queue, so that stats() (and close()
        # with a stuck writer) never miss a batch in transit.
        ids: list[uuid.UUID] = []
        batch: list[Captured] = []
        self._held.append((ids, batch))
        self._take_batch(into=batch)
        return ids, batch, Preparation(lambda: self._ready(ids, batch))

    def _assign_ids(self, ids: list[uuid.UUID], batch: list[Captured]) -> None:
        """Fill a held batch's ids, once: in its preparation (usually while the batch before
        it is being stored), or before it is first spooled, whichever comes first. Under the
        lock, because close() may spool a stuck writer's held batches from another thread."""
        if len(ids) == len(batch):
            return
        with self._lock:
            # Only the events without one yet: close() may have spooled the first ones under
            # their ids while the writer was still filling the batch.
            given = len(ids)
            if given < len(batch):
                ids.extend(uuid7_batch([ev[0] for ev in batch[given:]]))

    def _ready(self, ids: list[uuid.UUID], batch: list[Captured]) -> Ready:
        """Rows for the sink; when every workspace is in the sink's committed cache, also
        resolved and sealed (canonical form), so the writer thread has less to do."""
        self._assign_ids(ids, batch)
        rows, quarantined = self._preparer.prepare(ids, batch)
        sink = self._sink
        resolved = None if sink is None or not rows else sink.resolve_from_cache(rows)
        if resolved is None:
            return rows, quarantined, None
        return resolved, quarantined, seal(resolved)

    def _handle_batch(
        self,
        ids: list[uuid.UUID],
        batch: list[Captured],
        prepared: Preparation,
        *,
        meanwhile: Callable[[], None] | None = None,
    ) -> None:
        try:
            self._assign_ids(ids, batch)
            in_wal = False
            if self.options.write_ahead:
                # Redacted before its write-ahead copy, once: the preparation skips it then.
                self._preparer.scrubber.scrub_all(batch)
                with self._lock:
                    if id(batch) in self._held_spooled_while_stuck:
                        self._wake.set()  # it is in the spool: replayed, in order, from there
                        return
                    in_wal = self._to_spool(self._wal, ids, batch, fsync=True, count=False)
                    if in_wal:
                        self._held_in_spool.add(id(batch))
            retry_due = time.monotonic() >= self._next_attempt
            if self._spool_pending() or (not self._healthy and not retry_due):
                # Older events wait in the spool (keep order by queueing behind them), or the
                # database failed a moment ago and its retry is not due yet.
                self._leave_in_spool(ids, batch, in_wal=in_wal)
                if self._healthy:
                    self._wake.set()
                return
            try:
                self._prepare_and_store(
                    ids, batch, replay=False, prepared=prepared, meanwhile=meanwhile
                )
            except SinkError as exc:
                self._failed(exc, len(batch))
                self._leave_in_spool(ids, batch, in_wal=in_wal)
                return
            if in_wal:
                with self._lock:
                    self._wal.append(COMMIT, [b""])
        finally:
            with self._lock:
                self._held = [held for held in self._held if held[1] is not batch]
                self._held_in_spool.discard(id(batch))
                self._held_spooled_while_stuck.discard(id(batch))

    def _prepare_and_store(
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
            self._store(rows, quarantined, replay=replay, sealed=sealed, meanwhile=meanwhile)
        except SinkError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug must cost one event, not a batch
            self._report(
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
            self._store(rows, quarantined, replay=replay)
            return
        except SinkError:
            raise
        except Exception as exc:  # noqa: BLE001 - this event is the one the writer cannot handle
            reason = f"auditledger could not prepare this event ({type(exc).__name__})"
        try:
            self._store([], [self._preparer.last_resort_row(event_id, event, reason)], replay=True)
        except SinkError:
            raise
        except Exception:  # noqa: BLE001 - not even the quarantine takes it: count it, say so
            self._drop("unstorable", 1)

    def _leave_in_spool(self, ids: list[uuid.UUID], batch: list[Captured], *, in_wal: bool) -> None:
        """The batch was not stored: make sure the spool holds it for replay."""
        if not in_wal:
            self._to_spool(self._wal, ids, batch)
            return
        # It is in the write-ahead segment already, uncommitted. A commit record after it
        # would claim it stored, so the segment is sealed now (replayable) and the next batch
        # starts a new one: a write-ahead segment only ever holds committed batches.
        with self._lock:
            self._wal.seal()

    def _store(
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
        sink = self._get_sink()
        started = time.monotonic()
        self._own_work = 0.0
        try:
            with self._watchdog.deadline(self.options.write_timeout, sink.abort):
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
                self._store(rows, quarantined, replay=True, conflict_retry=False)
                return
            if exc.kind is ErrorKind.CONFLICT:
                raise SinkError(ErrorKind.TRANSIENT, exc.code) from exc
            if exc.kind is not ErrorKind.DATA:
                raise
            if len(rows) + len(quarantined) <= 1:
                if rows:
                    reason = f"refused by the database ({exc.code})"
                    quarantine = [self._preparer.quarantine_from_row(rows[0], reason)]
                    self._store([], quarantine, replay=True)
                else:
                    # Even its quarantine row is refused (a rule of the user's own schema).
                    self._drop("refused", len(quarantined))
                return
            if rows:
                half = len(rows) // 2
                self._store(rows[:half], quarantined, replay=replay)
                self._store(rows[half:], [], replay=replay)
            else:
                half = len(quarantined) // 2
                self._store([], quarantined[:half], replay=replay)
                self._store([], quarantined[half:], replay=replay)
            return
        # The database's time: the next batch's preparation, done meanwhile, is not its.
        elapsed = time.monotonic() - started - self._own_work
        self._latency = elapsed
        self._latency_max = max(elapsed, self._latency_max or 0.0)
        self._written += written
        self._quarantined += kept
        if not self._healthy:
            log.warning("auditledger: the database is reachable again")
        self._healthy = True
        self._backoff = 0.0
        self._last_error = None

    def _paused(self, work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            started = time.monotonic()
            with self._watchdog.paused():
                work()
            self._own_work += time.monotonic() - started

        return run

    def _get_sink(self) -> Sink:
        if self._sink is None:
            self._sink = self._sink_factory()
        return self._sink

    def _failed(self, exc: SinkError, count: int) -> None:
        self._healthy = False
        self._last_error = f"{exc.kind.value}:{exc.code}"
        if exc.kind is ErrorKind.PERMANENT:
            self._backoff = _MAX_BACKOFF
            self._report(
                "permanent",
                f"auditledger: database write failed permanently ({exc.code}): check the URL, "
                "credentials and `auditledger db upgrade`; events are kept in the spool",
                level=logging.ERROR,
            )
        else:
            self._backoff = min(_MAX_BACKOFF, max(0.1, self._backoff * 2))
            spooled = f"; {count} events spooled" if count else ""
            self._report(
                "transient",
                f"auditledger: database write failed ({exc.code}){spooled}, "
                f"retrying in {self._backoff:.1f}s",
            )
        jitter = random.uniform(0.8, 1.2)  # noqa: S311 - spreading retries, not security
        self._next_attempt = time.monotonic() + self._backoff * jitter

    def _to_spool(
        self,
        segment: SegmentWriter,
        ids: list[uuid.UUID],
        batch: list[Captured],
        *,
        fsync: bool = False,
        count: bool = True,
    ) -> bool:
        """Append a batch to a segment. With ``count`` (not for the write-ahead copy of a
        batch about to be stored), a batch the spool cannot take is counted as dropped."""
        with self._lock:
            if self._spool_full():
                if count:
                    self._drop("spool_full", len(batch))
                return False
            try:
                self._spool_bytes_estimate += segment.append(EVENT, self._encode(ids, batch))
                segment.flush(fsync=fsync)
            except OSError:
                if count:
                    self._drop("spool_unavailable", len(batch))
                self._report(
                    "spool", "auditledger: cannot write to the spool directory", level=logging.ERROR
                )
                return False
            if count:
                self._spooled += len(batch)
            return True

    def _spool_pending(self) -> bool:
        if self.options.write_ahead:
            return bool(self._wal.sealed or self._overflow.sealed or self._overflow.has_events())
        return bool(
            self._wal.sealed
            or self._overflow.sealed
            or self._wal.has_events()
            or self._overflow.has_events()
        )

    def _replay_due(self, now: float) -> bool:
        if not self._healthy:
            return now >= self._next_attempt
        if self._spool_pending():
            return True
        if now >= self._next_scan:
            self._next_scan = now + self.options.replay_interval
            return True
        return False

    def _replay(self) -> bool:
        """Store every replayable segment, ours first-sealed and dead processes' alike."""
        with self._lock:
            self._overflow.seal()
            if self.options.write_ahead:
                self._wal.discard()  # it only ever holds committed batches (_leave_in_spool)
            else:
                self._wal.seal()
        for segment in claim_segments(self.spool_dir, self.options.database):
            try:
                stored = self._replay_segment(segment.events())
                if segment.foreign:
                    segment.release()
                    continue
            except SinkError as exc:
                segment.release()
                self._failed(exc, 0)
                return False
            except Exception as exc:  # noqa: BLE001 - an unreadable segment must not stop replay
                # Set aside rather than retried forever: it would hold every later batch behind
                # it. Kept on disk (*.corrupt) for a human; `auditledger status` counts them.
                segment.set_aside()
                self._drop("corrupt_segment", 1)
                self._report(
                    "replay",
                    f"auditledger: a spool segment could not be replayed ({type(exc).__name__});"
                    " it was set aside as *.corrupt",
                    level=logging.ERROR,
                )
                continue
            segment.done()
            self._replayed += stored
            if segment.damage:
                self._count_damage(segment)
        # Forget our sealed segments that are gone, whoever replayed them (another logger on
        # this spool may have): a stale name would keep every later batch behind the spool.
        for writer in (self._wal, self._overflow):
            writer.sealed = {n for n in writer.sealed if (self.spool_dir / n).exists()}
        return True

    def _count_damage(self, segment: SegmentReplay) -> None:
        """A damaged segment was replayed around its damage: count what it cost, say so."""
        for reason, count in segment.lost.items():
            self._drop(reason, count)
        self._report(
            "damaged-segment",
            f"auditledger: a spool segment was damaged ({sum(segment.lost.values())} events "
            "lost); the rest was replayed and the damaged bytes kept in *.corrupt",
            level=logging.ERROR,
        )

    def _replay_segment(self, events: Iterator[tuple[str, Captured]]) -> int:
        """Store a segment's events batch by batch; returns how many. As in ``_drain``, each
        batch is prepared while the one before it is stored. A record that cannot be read
        raises, but only after the batches read before it are stored."""
        batches = self._batches_of(events)
        current = next(batches, None)
        prepared = None if current is None else self._replay_preparation(*current)
        stored = 0
        while current is not None and prepared is not None:
            try:
                following = next(batches, None)
            except Exception:
                self._prepare_and_store(*current, replay=True, prepared=prepared)
                # Counted here: the segment is set aside, so _replay never counts it.
                self._replayed += stored + len(current[1])
                raise
            ahead = None if following is None else self._replay_preparation(*following)
            self._prepare_and_store(
                *current,
                replay=True,
                prepared=prepared,
                meanwhile=None if ahead is None else ahead.run,
            )
            stored += len(current[1])
            current, prepared = following, ahead
        return stored

    def _batches_of(
        self, events: Iterator[tuple[str, Captured]]
    ) -> Iterator[tuple[list[uuid.UUID], list[Captured]]]:
        ids: list[uuid.UUID] = []
        batch: list[Captured] = []
        try:
            for event_id, event in events:
                ids.append(uuid.UUID(event_id))
                batch.append(event)
                if len(batch) >= self.options.batch_size:
                    yield ids, batch
                    ids, batch = [], []
        except Exception:
            if batch:  # the events read before an unreadable record are stored first
                yield ids, batch
            raise
        if batch:
            yield ids, batch

    def _replay_preparation(self, ids: list[uuid.UUID], batch: list[Captured]) -> Preparation:
        return Preparation(lambda: self._ready(ids, batch))

    def _answer_flushes(self) -> None:
        with self._requests_lock:
            if not self._requests:
                return
            requests, self._requests = self._requests, []
        clear = self._nothing_pending()
        if not clear and self._healthy:
            self._replay()
            self._drain(None)
            clear = self._nothing_pending()
        with self._lock:
            dropped = sum(self._dropped.values())
        if clear and dropped > self._drops_answered:
            # Events were dropped since the last flush answered: they are not in the database,
            # so this flush says False (once; the count stays in stats().dropped).
            self._drops_answered = dropped
            clear = False
            finished = True
        else:
            finished = False
        now = time.monotonic()
        spooled = not self._healthy and not self._queue and not self._held
        keep = []
        for request in requests:
            if clear or finished or (spooled and request.settle_when_spooled):
                request.ok = clear
                request.done.set()
            elif now < request.deadline:
                keep.append(request)
            else:
                request.done.set()
        if keep:
            with self._requests_lock:
                self._requests.extend(keep)

    def _nothing_pending(self) -> bool:
        """Nothing of ours waits, and no segment in the spool is waiting for anyone."""
        if self._queue or self._held:
            return False
        with self._lock:
            if self._overflow.has_events() or (
                self._wal.has_events() and not self.options.write_ahead
            ):
                return False
            sealed = self._wal.sealed | self._overflow.sealed
        if any((self.spool_dir / name).exists() for name in sealed):
            return False
        # Segments sealed by another logger or left by a dead process: a flush replays them
        # too, so "flush() returned True" means the spool holds nothing replayable.
        return not has_claimable_segments(self.spool_dir, self.options.database)

    def _finish(self) -> None:
        with self._lock:
            if self.options.write_ahead:
                self._wal.discard()  # it only ever holds committed batches (_leave_in_spool)
            else:
                self._wal.seal()
            self._overflow.seal()
        if self._sink is not None:
            self._sink.close()
            self._sink = None
        with self._requests_lock:
            for request in self._requests:
                request.done.set()
            self._requests = []

    def _spool_leftovers(self, *, include_inflight: bool = False) -> None:
        """After close(): what is still queued (and, if the writer is stuck, the batch it
        holds) goes to a sealed spool segment for the next logger or process to replay."""
        leftovers: list[Captured] = []
        try:
            while True:
                leftovers.append(self._queue.popleft())
        except IndexError:
            pass
        held = list(self._held) if include_inflight else []
        if not leftovers and not held:
            return
        held_spooled = 0
        with self._lock:
            try:
                for ids, batch in held:
                    self._assign_ids(ids, batch)
                    # The writer may still be appending to it: what has an id is spooled.
                    self._overflow.append(EVENT, self._encode(ids, batch[: len(ids)]))
                    held_spooled += len(ids)
                for event in leftovers:
                    event_id = str(uuid7_from_ns(event[0], os.urandom(10)))
                    scrub = self._preparer.scrubber.scrub
                    self._overflow.append(EVENT, [encode_event(event_id, event, scrub)])
                self._overflow.seal()
            except OSError:
                self._drop("spool_unavailable", len(leftovers))
                return
            finally:
                self._popped += len(leftovers)
            # The batch a stuck writer holds counts as spooled too: it is in the spool now, and
            # if its write does commit later, the replay de-duplicates it.
            self._spooled += len(leftovers) + held_spooled

    # ---- write-ahead: what waits behind a stuck write -----------------------------------

    def _spool_behind_stuck_write(self) -> None:
        """On the watchdog's thread, while a write overruns ``flush_interval`` (and then every
        ``flush_interval``): the queue, and any batch taken but not yet written ahead, go to
        the spool (fsynced), to be replayed in order once the database answers."""
        try:
            with self._lock:
                if self.state is State.CLOSED:
                    return  # close() spools what is left itself
                events: list[Captured] = []
                queue = self._queue
                while queue:
                    events.append(queue.popleft())
                self._popped += len(events)
                spooled = 0
                for ids, batch in list(self._held):
                    if id(batch) in self._held_in_spool:
                        continue
                    self._assign_ids(ids, batch)
                    if self._to_spool(self._overflow, ids, batch, count=False):
                        spooled += len(ids)
                        self._held_in_spool.add(id(batch))
                        self._held_spooled_while_stuck.add(id(batch))
                if events:
                    ids = uuid7_batch([ev[0] for ev in events])
                    if self._to_spool(self._overflow, ids, events, fsync=True, count=False):
                        spooled += len(events)
                    else:
                        queue.extendleft(reversed(events))  # no room: they wait in memory
                        self._popped -= len(events)
                elif spooled:
                    self._overflow.flush(fsync=True)
                self._spooled += spooled
        except Exception as exc:  # noqa: BLE001 - reported; the writer spools it later anyway
            self._report(
                "internal",
                f"auditledger writer error ({type(exc).__name__}) while spooling behind a stuck "
                "write",
                level=logging.ERROR,
            )

    # ---- shared helpers ----------------------------------------------------------------

    def _spool_full(self) -> bool:
        # Checked under self._lock for every spooled event: a directory scan each time would
        # be too slow, so appends are added as they happen and a scan (at most once a second)
        # corrects the estimate for replayed segments and other processes' appends.
        now = time.monotonic()
        if now >= self._spool_rescan_at:
            self._spool_bytes_estimate = spool_bytes(self.spool_dir)
            self._spool_rescan_at = now + 1.0
        return self._spool_bytes_estimate >= self.options.spool_max_bytes

    def _drop(self, reason: str, count: int) -> None:
        self._dropped[reason] = self._dropped.get(reason, 0) + count
        self._report(
            f"drop:{reason}",
            f"auditledger: events dropped ({reason}); {self._dropped[reason]} so far",
            level=logging.ERROR,
        )

    def _report(self, key: str, message: str, *, level: int = logging.WARNING) -> None:
        """Log a problem at most once a minute per kind: never once per event."""
        now = time.monotonic()
        if now < self._reported.get(key, 0.0):
            return
        self._reported[key] = now + _REPORT_EVERY
        log.log(level, message)

    # ---- fork ----------------------------------------------------------------------------

    def before_fork(self) -> None:
        self._lock.acquire()
        try:
            self._overflow.flush()
            self._wal.flush()
        except OSError:
            pass

    def after_fork_in_parent(self) -> None:
        self._lock.release()

    def after_fork_in_child(self) -> list[object]:
        """Forget the parent's thread, queue, connection and segments; return what to keep alive."""
        orphans: list[object] = []
        if self._sink is not None:
            orphans.append(self._sink)
        self._wal.forget_after_fork()
        self._overflow.forget_after_fork()
        state = self.state
        self._init_runtime()
        self.state = State.UNOPENED if state is State.RUNNING else state
        return orphans

    def _encode(self, ids: list[uuid.UUID], batch: list[Captured]) -> list[bytes]:
        """Spool records for a batch, redacted first (see ``_scrub``)."""
        scrub = self._preparer.scrubber.scrub
        return [encode_event(str(i), ev, scrub) for i, ev in zip(ids, batch, strict=True)]
