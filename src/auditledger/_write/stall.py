"""Write-ahead while a write is stuck: what waits behind it goes to the spool as it waits.

With ``write_ahead=True`` the batch being written is in the spool already, but a database that
hangs used to leave everything queued behind it (and a batch taken ahead) in memory only, for
a ``SIGKILL`` to take. The storer's watchdog calls ``BehindStuckWrite`` every
``flush_interval`` while a database call overruns it; the queue and any batch taken but not yet
written ahead are then appended to the overflow segment (fsynced), to be replayed in order
once the database answers.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from collections.abc import Callable

from .._ids import uuid7_batch
from .capture import T_NS, Captured
from .replay import SpoolKeeper
from .stats import Counters, Reporter

Held = tuple[list[uuid.UUID], list[Captured]]


def assign_ids(lock: threading.RLock, ids: list[uuid.UUID], batch: list[Captured]) -> None:
    """Fill a held batch's ids, once: in its preparation (usually while the batch before it
    is being stored), or before it is first spooled, whichever comes first. Under the lock,
    because close() (or a stuck write, see below) may spool held batches from another thread."""
    if len(ids) == len(batch):
        return
    with lock:
        # Only the events without one yet: close() may have spooled the first ones under
        # their ids while the writer was still filling the batch.
        given = len(ids)
        if given < len(batch):
            ids.extend(uuid7_batch([ev[T_NS] for ev in batch[given:]]))


class BehindStuckWrite:
    """Called on the watchdog's thread; its state is guarded by the spool's lock."""

    def __init__(
        self,
        queue: deque[Captured],
        held: Callable[[], list[Held]],
        assign_ids: Callable[[list[uuid.UUID], list[Captured]], None],
        spool: SpoolKeeper,
        counters: Counters,
        reporter: Reporter,
        closed: Callable[[], bool],
    ) -> None:
        self._queue = queue
        self._held = held
        self._assign_ids = assign_ids
        self._spool = spool
        self._counters = counters
        self._reporter = reporter
        self._closed = closed
        self._in_spool: set[int] = set()  # held batches (by id) in the spool already
        self._spooled_here: set[int] = set()  # ...because they were spooled here

    def write_ahead(self, ids: list[uuid.UUID], batch: list[Captured]) -> bool | None:
        """The spool's write-ahead copy of a batch about to be stored (True when made), or
        None when it was spooled here already: then it must not be stored, but replayed in
        order from the spool."""
        with self._spool.lock:
            if id(batch) in self._spooled_here:
                return None
            written = self._spool.write_ahead(ids, batch)
            if written:
                self._in_spool.add(id(batch))
            return written

    def forget(self, batch: list[Captured]) -> None:
        self._in_spool.discard(id(batch))
        self._spooled_here.discard(id(batch))

    def __call__(self) -> None:
        try:
            with self._spool.lock:
                if not self._closed():  # close() spools what is left itself
                    self._spool_what_waits()
        except Exception as exc:  # noqa: BLE001 - reported; the writer spools it later anyway
            self._reporter.report(
                "internal",
                f"auditledger writer error ({type(exc).__name__}) while spooling behind a stuck "
                "write",
                level=logging.ERROR,
            )

    def _spool_what_waits(self) -> None:
        events: list[Captured] = []
        queue = self._queue
        while queue:
            events.append(queue.popleft())
        self._counters.popped += len(events)
        spooled = 0
        for ids, batch in list(self._held()):
            if id(batch) in self._in_spool:
                continue
            self._assign_ids(ids, batch)
            if self._spool.spool_while_stuck(ids, batch, fsync=False):
                spooled += len(ids)
                self._in_spool.add(id(batch))
                self._spooled_here.add(id(batch))
        if events:
            ids = uuid7_batch([ev[T_NS] for ev in events])
            if self._spool.spool_while_stuck(ids, events, fsync=True):
                spooled += len(events)
            else:
                queue.extendleft(reversed(events))  # no room: they wait in memory
                self._counters.popped -= len(events)
        elif spooled:
            self._spool.sync_overflow()
        self._counters.spooled += spooled
