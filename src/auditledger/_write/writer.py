"""The background writer: a bounded queue, one thread, batches, and the spool behind them.

Callers only append a captured event to a deque (no lock, no I/O). The writer thread takes
batches, gives them ids and hands them to storing (``Storer``) under a client-side deadline.
A batch the database cannot take goes to this process's spool (``SpoolKeeper``); when the
database answers again the spool is replayed first, through the same storing, so order is
kept and replays are idempotent. When the queue is full, callers spool the event themselves.
The writer keeps only the loop (queue, thread, flush, close, fork): storing, the spool and
the counters are objects it calls, which never call back into it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from .._sinks.base import Sink, SinkError
from .backoff import Health
from .capture import Captured
from .options import WriterOptions
from .prepare import Preparer
from .replay import SpoolKeeper
from .spool import segment_count, spool_bytes
from .stall import BehindStuckWrite, assign_ids
from .stats import AuditStats, Counters, Reporter, snapshot
from .storing import Preparation, Ready, Storer

log = logging.getLogger("auditledger")


class State(Enum):
    UNOPENED = "unopened"
    RUNNING = "running"
    CLOSED = "closed"


# Typed as plain State: another thread's close() can change the state between two reads.
_CLOSED: State = State.CLOSED


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
        options = self.options
        self._queue: deque[Captured] = deque()
        self._wake = threading.Event()
        self._requests: list[_FlushRequest] = []
        # Re-entrant: a SIGTERM handler may call close() (and so flush()) while the main
        # thread was inside flush() holding it.
        self._requests_lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._stop = False
        # Batches taken from the queue and not yet stored or spooled: the one being stored
        # and the next, being prepared meanwhile. close() spools them if the writer is stuck.
        self._held: list[tuple[list[uuid.UUID], list[Captured]]] = []
        self._reporter = Reporter()
        self._counters = Counters(self._reporter)
        self._health = Health(self._reporter)
        self._storer = Storer(
            self._sink_factory,
            self._preparer,
            options.write_timeout,
            self._counters,
            self._health,
            self._reporter,
            # With write-ahead, what waits behind a stuck write is spooled as it waits.
            overrun=(options.flush_interval, lambda: self._behind())
            if options.write_ahead
            else None,
        )
        self._spool = SpoolKeeper(
            self.spool_dir,
            options,
            counters=self._counters,
            reporter=self._reporter,
            scrub=self._preparer.scrubber.scrub,
        )
        # Guards spool segments and the counters callers touch (see SpoolKeeper).
        self._lock = self._spool.lock
        self._assign_ids = functools.partial(assign_ids, self._lock)
        self._behind = BehindStuckWrite(
            self._queue,
            lambda: self._held,
            self._assign_ids,
            self._spool,
            self._counters,
            self._reporter,
            lambda: self.state is State.CLOSED,
        )

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
        self._spool.spill(event, closed=self.state is State.CLOSED)

    def count_uncapturable(self) -> None:  # a call whose values could not be read at all
        with self._lock:
            self._counters.uncapturable()

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
        # Keep back the time spooling what a stuck writer holds takes (~10 µs an event; 20 µs
        # let close(1) take 1.04-1.11 s on a busy machine), so close() keeps its timeout.
        held = len(self._queue) + sum(len(batch) for _, batch in list(self._held))
        timeout -= min(timeout / 2, held * 40e-6)
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
        self._spool.seal_overflow()
        return ok and self._nothing_pending()

    def stats(self) -> AuditStats:
        return snapshot(
            self._counters,
            self._lock,
            last_error=self._health.last_error,
            healthy=self._health.healthy,
            queue_depth=len(self._queue),
            in_flight=sum(len(batch) for _, batch in list(self._held)),
            spool_bytes=spool_bytes(self.spool_dir, self.options.database),
            spool_segments=segment_count(self.spool_dir, self.options.database),
        )

    def _run(self) -> None:
        while True:
            self._wake.wait(self.options.flush_interval)
            self._wake.clear()
            try:
                self._cycle()
            except Exception as exc:  # noqa: BLE001 - the writer must outlive its own bugs
                self._reporter.report(
                    "internal",
                    f"auditledger writer error ({type(exc).__name__})",
                    level=logging.ERROR,
                )
            if self._stop and not self._queue:
                self._finish()
                return

    def _cycle(self) -> None:
        now = time.monotonic()
        if self._spool.replay_due(now, self._health):
            self._spool.replay(self._storer, self._health)
        # Only what is queued now: under a steady stream the loop must still reach the flushes.
        self._drain(len(self._queue))
        self._spool.flush()
        self._answer_flushes()
        if self._health.healthy:
            # Also while idle: scheduled checkpoints must be signed whether or not events
            # arrive. Sinks connect lazily, so a tick with nothing to do costs no connection.
            self._storer.tick(now)

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
            self._counters.popped += len(batch)
        return batch

    def _take_and_prepare(self) -> tuple[list[uuid.UUID], list[Captured], Preparation]:
        # Registered as held before the events leave the queue, so that stats() (and close()
        # with a stuck writer) never miss a batch in transit.
        ids: list[uuid.UUID] = []
        batch: list[Captured] = []
        self._held.append((ids, batch))
        self._take_batch(into=batch)
        return ids, batch, Preparation(lambda: self._ready(ids, batch))

    def _ready(self, ids: list[uuid.UUID], batch: list[Captured]) -> Ready:
        self._assign_ids(ids, batch)
        return self._storer.ready(ids, batch)

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
                self._preparer.scrubber.scrub_all(batch)  # redacted before its copy, once
                written = self._behind.write_ahead(ids, batch)
                if written is None:  # spooled while a write was stuck: replayed from there
                    self._wake.set()
                    return
                in_wal = written
            retry_due = self._health.retry_due(time.monotonic())
            if self._spool.pending() or (not self._health.healthy and not retry_due):
                # Older events wait in the spool (keep order by queueing behind them), or the
                # database failed a moment ago and its retry is not due yet.
                self._spool.leave(ids, batch, in_wal=in_wal)
                if self._health.healthy:
                    self._wake.set()
                return
            try:
                self._storer.prepare_and_store(
                    ids, batch, replay=False, prepared=prepared, meanwhile=meanwhile
                )
            except SinkError as exc:
                self._health.failed(exc, len(batch))
                self._spool.leave(ids, batch, in_wal=in_wal)
                return
            if in_wal:
                self._spool.committed()
        finally:
            with self._lock:
                self._held = [held for held in self._held if held[1] is not batch]
                self._behind.forget(batch)

    def _answer_flushes(self) -> None:
        with self._requests_lock:
            if not self._requests:
                return
            requests, self._requests = self._requests, []
        clear = self._nothing_pending()
        if not clear and self._health.healthy:
            self._spool.replay(self._storer, self._health)
            self._drain(None)
            clear = self._nothing_pending()
        with self._lock:
            dropped = sum(self._counters.dropped.values())
        if clear and dropped > self._counters.drops_answered:
            # Events were dropped since the last flush answered: they are not in the database,
            # so this flush says False (once; the count stays in stats().dropped).
            self._counters.drops_answered = dropped
            clear = False
            finished = True
        else:
            finished = False
        now = time.monotonic()
        spooled = not self._health.healthy and not self._queue and not self._held
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
        return self._spool.empty()

    def _finish(self) -> None:
        self._spool.seal()
        self._storer.close()
        with self._requests_lock:
            for request in self._requests:
                request.done.set()
            self._requests = []

    def _spool_leftovers(self, *, include_inflight: bool = False) -> None:
        """After close(): what is queued (and what a stuck writer holds) goes to the spool."""
        leftovers: list[Captured] = []
        try:
            while True:
                leftovers.append(self._queue.popleft())
        except IndexError:
            pass
        held = list(self._held) if include_inflight else []
        if not leftovers and not held:
            return
        with self._lock:
            for ids, batch in held:
                self._assign_ids(ids, batch)
            self._spool.leftovers(leftovers, held)

    def before_fork(self) -> None:
        self._spool.before_fork()  # holds the spool's lock across the fork

    def after_fork_in_parent(self) -> None:
        self._spool.after_fork_in_parent()

    def after_fork_in_child(self) -> list[object]:
        """Forget the parent's thread, queue, connection and segments; return what to keep alive."""
        orphans = self._storer.forget_after_fork()
        self._spool.forget_after_fork()
        state = self.state
        self._init_runtime()
        self.state = State.UNOPENED if state is State.RUNNING else state
        return orphans
