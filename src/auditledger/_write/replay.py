"""Where a batch goes when the database cannot take it: the write-ahead and overflow
segments of the spool, and their replay (oldest first, through the same storing) once the
database answers again. Callers spill here when the queue is full; close() leaves here."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from .._ids import uuid7_batch, uuid7_from_ns
from .._sinks.base import SinkError
from .backoff import Health
from .capture import T_NS, Captured
from .options import WriterOptions
from .spool import (
    SegmentReplay,
    SegmentWriter,
    claim_segments,
    encode_event,
    has_claimable_segments,
    spool_bytes,
)
from .spool_frames import COMMIT, EVENT
from .stats import Counters, Reporter
from .storing import Preparation, Storer

Held = tuple[list[uuid.UUID], list[Captured]]
# Events close() spools per append: few calls, and segments still roll over at their cap.
_LEFTOVER_CHUNK = 1_000


class SpoolKeeper:
    """This process's spool segments and their replay. ``lock`` guards the segments and the
    counters callers touch. Re-entrant: a __del__ run by the garbage collector on the writer
    thread may log an event into a full queue."""

    def __init__(
        self,
        spool_dir: Path,
        options: WriterOptions,
        *,
        counters: Counters,
        reporter: Reporter,
        scrub: Callable[[Captured], Captured],
    ) -> None:
        self.spool_dir = spool_dir
        # Segments carry the database's fingerprint; only its own are replayed here.
        self._database = database = options.database
        # Redacts an event before its first write to disk (see scrub.py).
        self._scrub = scrub
        self._write_ahead = write_ahead = options.write_ahead
        self._max_bytes = options.spool_max_bytes
        self._batch_size = options.batch_size
        self._replay_interval = options.replay_interval
        self._counters = counters
        self._reporter = reporter
        self.lock = threading.RLock()
        self._wal = SegmentWriter(spool_dir, "w", database, committed_only=write_ahead)
        self._overflow = SegmentWriter(spool_dir, "o", database)
        self._bytes_estimate = 0
        self._rescan_at = 0.0
        self._next_scan = 0.0

    # ---- spooling ------------------------------------------------------------------------

    def spill(self, event: Captured, *, closed: bool) -> None:
        """The queue is full (or the writer closed): the event goes to the spool, not away."""
        with self.lock:
            self._counters.outside_queue += 1
            if self._full():
                self._counters.drop("spool_full", 1)
                return
            event_id = str(uuid7_from_ns(event[T_NS], os.urandom(10)))
            try:
                self._bytes_estimate += self._overflow.append(
                    EVENT, [encode_event(event_id, event, self._scrub)]
                )
                if closed:
                    # No writer will seal it later: release it now so another logger on this
                    # spool directory (or the next process) can replay it.
                    self._overflow.seal()
            except OSError:
                self._counters.drop("spool_unavailable", 1)
                return
            self._counters.spooled += 1

    def write_ahead(self, ids: list[uuid.UUID], batch: list[Captured]) -> bool:
        """With ``write_ahead``, a batch about to be stored is first fsynced to the spool."""
        return self._write_ahead and self._to_spool(self._wal, ids, batch, fsync=True, count=False)

    def spool_while_stuck(
        self, ids: list[uuid.UUID], batch: list[Captured], *, fsync: bool
    ) -> bool:
        """What waits behind a stuck write (write-ahead): to the overflow segment."""
        return self._to_spool(self._overflow, ids, batch, fsync=fsync, count=False)

    def sync_overflow(self) -> None:
        with self.lock:
            self._overflow.flush(fsync=True)

    def committed(self) -> None:
        """The batch just written ahead is stored."""
        with self.lock:
            self._wal.append(COMMIT, [b""])

    def leave(self, ids: list[uuid.UUID], batch: list[Captured], *, in_wal: bool) -> None:
        """The batch was not stored: make sure the spool holds it for replay."""
        if not in_wal:
            self._to_spool(self._wal, ids, batch)
            return
        # It is in the write-ahead segment already, uncommitted. A commit record after it
        # would claim it stored, so the segment is sealed now (replayable) and the next batch
        # starts a new one: a write-ahead segment only ever holds committed batches.
        with self.lock:
            self._wal.seal()

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
        with self.lock:
            if self._full():
                if count:
                    self._counters.drop("spool_full", len(batch))
                return False
            try:
                self._bytes_estimate += segment.append(EVENT, self._encode(ids, batch))
                segment.flush(fsync=fsync)
            except OSError:
                if count:
                    self._counters.drop("spool_unavailable", len(batch))
                self._reporter.report(
                    "spool", "auditledger: cannot write to the spool directory", level=logging.ERROR
                )
                return False
            if count:
                self._counters.spooled += len(batch)
            return True

    def leftovers(self, queued: list[Captured], held: list[Held]) -> None:
        """After close(): what is still queued (and, if the writer is stuck, the batches it
        holds, with the ids given so far) goes to a sealed segment for the next logger or
        process to replay. The caller holds ``lock`` while it gives the held batches ids."""
        held_spooled = 0
        with self.lock:
            try:
                for ids, batch in held:
                    # The writer may still be appending to it: what has an id is spooled.
                    self._overflow.append(EVENT, self._encode(ids, batch[: len(ids)]))
                    held_spooled += len(ids)
                # One append for the lot, ids drawn in one system call: close() waits for this.
                ids = uuid7_batch([event[T_NS] for event in queued])
                scrub = self._scrub
                for begin in range(0, len(queued), _LEFTOVER_CHUNK):
                    chunk = range(begin, min(begin + _LEFTOVER_CHUNK, len(queued)))
                    records = [encode_event(str(ids[i]), queued[i], scrub) for i in chunk]
                    self._overflow.append(EVENT, records)
                self._overflow.seal()
            except OSError:
                self._counters.drop("spool_unavailable", len(queued))
                return
            finally:
                self._counters.popped += len(queued)
            # The batch a stuck writer holds counts as spooled too: it is in the spool now, and
            # if its write does commit later, the replay de-duplicates it.
            self._counters.spooled += len(queued) + held_spooled

    def _full(self) -> bool:
        # Checked under the lock for every spooled event: a directory scan each time would
        # be too slow, so appends are added as they happen and a scan (at most once a second)
        # corrects the estimate for replayed segments and other processes' appends.
        now = time.monotonic()
        if now >= self._rescan_at:
            self._bytes_estimate = spool_bytes(self.spool_dir)
            self._rescan_at = now + 1.0
        return self._bytes_estimate >= self._max_bytes

    # ---- state ---------------------------------------------------------------------------

    def pending(self) -> bool:
        """Events of ours wait in the spool: a new batch queues behind them, to keep order."""
        if self._write_ahead:
            return bool(self._wal.sealed or self._overflow.sealed or self._overflow.has_events())
        return bool(
            self._wal.sealed
            or self._overflow.sealed
            or self._wal.has_events()
            or self._overflow.has_events()
        )

    def empty(self) -> bool:
        """Nothing of ours is in the spool, and no segment there is waiting for anyone."""
        with self.lock:
            if self._overflow.has_events() or (self._wal.has_events() and not self._write_ahead):
                return False
            sealed = self._wal.sealed | self._overflow.sealed
        if any((self.spool_dir / name).exists() for name in sealed):
            return False
        # Segments sealed by another logger or left by a dead process: a flush replays them
        # too, so "flush() returned True" means the spool holds nothing replayable.
        return not has_claimable_segments(self.spool_dir, self._database)

    def flush(self) -> None:
        with self.lock:
            self._overflow.flush()

    def seal(self) -> None:
        """Release our segments for replay (the write-ahead one only ever holds committed
        batches, so it is discarded instead when write-ahead is on)."""
        with self.lock:
            if self._write_ahead:
                self._wal.discard()
            else:
                self._wal.seal()
            self._overflow.seal()

    def seal_overflow(self) -> None:
        with self.lock:
            self._overflow.seal()

    # ---- replay --------------------------------------------------------------------------

    def replay_due(self, now: float, health: Health) -> bool:
        if not health.healthy:
            return health.retry_due(now)
        if self.pending():
            return True
        if now >= self._next_scan:
            self._next_scan = now + self._replay_interval
            return True
        return False

    def replay(self, storer: Storer, health: Health) -> bool:
        """Store every replayable segment, ours first-sealed and dead processes' alike."""
        self.seal()
        for segment in claim_segments(self.spool_dir, self._database):
            try:
                stored = self._replay_segment(storer, segment.events())
                if segment.foreign:
                    segment.release()
                    continue
            except SinkError as exc:
                segment.release()
                health.failed(exc, 0)
                return False
            except Exception as exc:  # noqa: BLE001 - an unreadable segment must not stop replay
                # Set aside rather than retried forever: it would hold every later batch behind
                # it. Kept on disk (*.corrupt) for a human; `auditledger status` counts them.
                segment.set_aside()
                self._counters.drop("corrupt_segment", 1)
                self._reporter.report(
                    "replay",
                    f"auditledger: a spool segment could not be replayed ({type(exc).__name__});"
                    " it was set aside as *.corrupt",
                    level=logging.ERROR,
                )
                continue
            segment.done()
            self._counters.replayed += stored
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
            self._counters.drop(reason, count)
        self._reporter.report(
            "damaged-segment",
            f"auditledger: a spool segment was damaged ({sum(segment.lost.values())} events "
            "lost); the rest was replayed and the damaged bytes kept in *.corrupt",
            level=logging.ERROR,
        )

    def _replay_segment(self, storer: Storer, events: Iterator[tuple[str, Captured]]) -> int:
        """Store a segment's events batch by batch; returns how many. As the writer's drain,
        the next batch is read and prepared while the one before it is stored. A record that
        cannot be read raises, but only after the batches read before it are stored."""
        batches = self._batches_of(events)
        current = next(batches, None)
        prepared = None if current is None else _preparation(storer, current)
        stored = 0
        while current is not None and prepared is not None:
            ahead = _ReadAhead(storer, batches)
            # Optimistic, as the ingesters: a batch is not checked id by id first (a query of
            # its 2,000 ids, before the COPY, while the server waits); an event stored already
            # (a batch whose commit was not seen) makes the COPY fail, and then it is checked.
            storer.prepare_and_store(*current, replay=False, prepared=prepared, meanwhile=ahead.run)
            stored += len(current[1])
            ahead.run()  # if the sink did not (SQLite; chains another writer waits for)
            if ahead.error is not None:
                # Counted here: the segment is set aside, so replay() never counts it.
                self._counters.replayed += stored
                raise ahead.error
            current, prepared = ahead.following, ahead.prepared
        return stored

    def _batches_of(self, events: Iterator[tuple[str, Captured]]) -> Iterator[Held]:
        ids: list[uuid.UUID] = []
        batch: list[Captured] = []
        try:
            for event_id, event in events:
                ids.append(uuid.UUID(event_id))
                batch.append(event)
                if len(batch) >= self._batch_size:
                    yield ids, batch
                    ids, batch = [], []
        except Exception:
            if batch:  # the events read before an unreadable record are stored first
                yield ids, batch
            raise
        if batch:
            yield ids, batch

    def _encode(self, ids: list[uuid.UUID], batch: list[Captured]) -> list[bytes]:
        """Spool records for a batch, redacted first (see scrub.py)."""
        scrub = self._scrub
        return [encode_event(str(i), ev, scrub) for i, ev in zip(ids, batch, strict=True)]

    # ---- fork ----------------------------------------------------------------------------

    def before_fork(self) -> None:
        self.lock.acquire()
        try:
            self._overflow.flush()
            self._wal.flush()
        except OSError:
            pass

    def after_fork_in_parent(self) -> None:
        self.lock.release()

    def forget_after_fork(self) -> None:
        self._wal.forget_after_fork()
        self._overflow.forget_after_fork()


def _preparation(storer: Storer, held: Held) -> Preparation:
    ids, batch = held
    return Preparation(lambda: storer.ready(ids, batch))


class _ReadAhead:
    """A segment's next batch, read and prepared as ``Sink.write``'s ``meanwhile``: while the
    database stores the batch before it. Reading (checksums, JSON) costs ~8 µs an event, a
    third of the replay's own work. Never raises: an unreadable record is kept in ``error``."""

    __slots__ = ("_batches", "_done", "_storer", "error", "following", "prepared")

    def __init__(self, storer: Storer, batches: Iterator[Held]) -> None:
        self._storer = storer
        self._batches = batches
        self._done = False
        self.following: Held | None = None
        self.prepared: Preparation | None = None
        self.error: Exception | None = None

    def run(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self.following = next(self._batches, None)
        except Exception as exc:  # noqa: BLE001 - raised by the replay once this batch is stored
            self.error = exc
            return
        if self.following is not None:
            self.prepared = _preparation(self._storer, self.following)
            self.prepared.run()
