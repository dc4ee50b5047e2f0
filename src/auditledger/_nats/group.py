"""Group commit for an ingester: the batches its partitions fetched, stored together.

An ingester owns many partitions (32 between a few processes) and has one database session.
Each partition's fetch returns what is there, often a few events when publishers trickle;
a transaction each would cost far more than the events. So a partition hands its batch here
(``submit``, decoded at once) and is told later whether to acknowledge it; one task stores
every batch waiting, a group at a time, each group in one transaction.

A partition may hand in its next batch before the one before it has committed: the next
group is then decoded, resolved and sealed while PostgreSQL works on this one, instead of
after the commit while PostgreSQL waits (what a live run had left once its publisher was
done took 0.93 s that way, 0.80 s this way).
Order per partition is kept: batches are stored in the order they were handed in, and when
a group fails, every batch waiting behind it fails too, so no partition's later batch is
stored before an earlier one that will be delivered again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._chain.canonical import Sealed, seal
from .._db.rows import QuarantineRow, Row
from .._sinks.base import ErrorKind, SinkError
from .._write.prepare import Limits, Preparer
from .decode import REFUSED, decode_stream_message, digest_row
from .ownership import IngestSink

_MAX_BACKOFF = 5.0


@dataclass
class _Waiting:
    rows: list[Row]
    quarantined: list[QuarantineRow]
    session: int
    done: asyncio.Future[bool]
    # The rows resolved (from the sink's committed caches) and sealed while the group before
    # was stored: see ``_seal_ahead``. One assignment, so the event loop sees all or nothing.
    ready: tuple[list[Row], list[Sealed]] | None = None


@dataclass
class GroupStats:
    stored: int = 0
    quarantined: int = 0
    transactions: int = 0


@dataclass
class GroupStore:
    sink: IngestSink
    db: asyncio.Lock  # the session's lock: one statement at a time
    report: Callable[[str, str], None]
    max_events: int = 5000
    stats: GroupStats = field(default_factory=GroupStats)
    closing: bool = False
    _waiting: list[_Waiting] = field(default_factory=list)
    _storer: asyncio.Future[None] | None = None
    _preparer: Preparer = field(default_factory=lambda: Preparer(Limits()))
    # Publisher keys (``auth``): when any, only messages signed with one of them are stored.
    keys: Mapping[str, bytes] = field(default_factory=dict, repr=False)

    def submit(self, msgs: list[Any], session: int) -> asyncio.Future[bool]:
        """Decodes the messages and queues them to be stored. The future is True once they are
        committed; False when they must not be acknowledged (the session, and so the
        partition, was lost, a group before them failed, or the ingester is stopping)."""
        rows, quarantined = _decoded(msgs, self.keys)
        if any(q[1].startswith(REFUSED) for q in quarantined):
            # A publisher without the key, or someone publishing by hand: worth a look, and
            # easy to miss among stored events. The reasons are in audit_quarantine.
            self.report("refused", "auditledger ingest: refused stream messages (see quarantine)")
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(rows, quarantined, session, done))
        if self._storer is None or self._storer.done():
            self._storer = asyncio.ensure_future(self._store_waiting())
            self._storer.add_done_callback(self._storer_ended)
        return done

    def _storer_ended(self, task: asyncio.Future[None]) -> None:
        """Cancelled before it began (its ``finally`` never ran) or ended by a bug: what it
        left waiting is told "not stored", and a bug is reported, not lost. (Not when a
        newer task already stores what waits: batches handed in after this one ended.)"""
        if task.cancelled():
            ended_early = True
        elif (exc := task.exception()) is not None:
            self.report("internal", f"auditledger ingest: store error ({type(exc).__name__})")
            ended_early = True
        else:
            ended_early = False
        if ended_early and task is self._storer:
            self._fail_waiting()

    async def _store_waiting(self) -> None:
        group: list[_Waiting] = []
        try:
            while self._waiting:
                group = self._take()
                if not await self._store_group(group):
                    # Batches behind a failed one may come from its partitions: stored now,
                    # they would be chained before the failed batch, delivered again.
                    self._fail_waiting()
        finally:
            # Whatever ends this task (a bug, a cancellation at shutdown), no partition may
            # wait for ever on a batch it handed in.
            _fail(group)
            self._fail_waiting()

    def _fail_waiting(self) -> None:
        _fail(self._waiting)
        self._waiting.clear()

    def _take(self) -> list[_Waiting]:
        """The next group: batches in the order handed in, of one session, up to about
        ``max_events``."""
        group: list[_Waiting] = []
        size = 0
        while self._waiting and (not group or size < self.max_events):
            if group and self._waiting[0].session != group[0].session:
                break
            item = self._waiting.pop(0)
            group.append(item)
            size += len(item.rows) + len(item.quarantined)
        return group

    async def _store_group(self, group: list[_Waiting]) -> bool:
        quarantined = [q for item in group for q in item.quarantined]
        ready = [item.ready for item in group]
        sealed: list[Sealed] | None = None
        if all(r is not None for r in ready) and any(item.rows for item in group):
            rows = [row for r in ready if r is not None for row in r[0]]
            sealed = [s for r in ready if r is not None for s in r[1]]
        else:
            rows = [r for item in group for r in item.rows]
        ok = False
        try:
            ok = await self._with_retries(rows, quarantined, group[0].session, sealed)
        except Exception as exc:  # noqa: BLE001 - not acknowledged: delivered again later
            self.report("internal", f"auditledger ingest: store error ({type(exc).__name__})")
        for item in group:
            if not item.done.done():
                item.done.set_result(ok)
        return ok

    async def _with_retries(
        self,
        rows: list[Row],
        quarantined: list[QuarantineRow],
        session: int,
        sealed: list[Sealed] | None = None,
    ) -> bool:
        backoff = 0.1
        # Optimistic, as the writer's own batches: the primary keys refuse an event stored
        # before (a redelivery after a commit whose ack was lost), and only then is the batch
        # checked id by id. Checking every batch first cost about a tenth of the write.
        replay = False
        while True:
            try:
                async with self.db:
                    stored, kept = await asyncio.to_thread(
                        self._store_split, rows, quarantined, session, replay, sealed
                    )
            except SinkError as exc:
                sealed = None  # a retry resolves and seals again, as the writer's do
                if exc.kind is ErrorKind.CONFLICT and not replay:
                    replay = True
                    continue
                if not self.sink.alive(session) or exc.kind is ErrorKind.PERMANENT:
                    self.report("store", f"auditledger ingest: store failed ({exc.code})")
                    if exc.kind is ErrorKind.PERMANENT:
                        async with self.db:
                            await asyncio.to_thread(self.sink.close)
                    return False
                self.report("store", f"auditledger ingest: store failed ({exc.code}), retrying")
                if self.closing:
                    return False
                await asyncio.sleep(backoff)
                backoff = min(_MAX_BACKOFF, backoff * 2)
                continue
            self.stats.stored += stored
            self.stats.quarantined += kept
            self.stats.transactions += 1
            return True

    def _store_split(
        self,
        rows: list[Row],
        quarantined: list[QuarantineRow],
        session: int,
        replay: bool,
        sealed: list[Sealed] | None = None,
    ) -> tuple[int, int]:
        """On the database thread. A row the database refuses is quarantined, not the batch:
        the batch is halved until that row is found (as the writer does). So is a row the
        storing code itself cannot handle (say, a JSON column that is not JSON, which the
        canonical form cannot parse): the wire format does not check what storing checks."""
        try:
            # ``sealed`` on the first attempt only (the halves of a split seal again); the
            # groups waiting behind are sealed while the server ends this COPY.
            return self.sink.store(
                rows,
                quarantined,
                session,
                replay=replay,
                sealed=sealed,
                meanwhile=self._seal_ahead if rows else None,
            )
        except SinkError as exc:
            if exc.kind is not ErrorKind.DATA:
                raise
            code, reason = exc.code, f"refused by the database ({exc.code})"
            failure: Exception = exc
        except Exception as exc:  # noqa: BLE001 - one event must not stall its partition
            code = type(exc).__name__
            reason = f"could not be stored ({code})"
            failure = exc
        if len(rows) + len(quarantined) <= 1:
            if not rows:
                raise SinkError(ErrorKind.PERMANENT, code) from failure
            row = self._preparer.quarantine_from_row(rows[0], reason)
            try:
                return self.sink.store([], [row], session, replay=True)
            except SinkError as again:
                if again.kind is not ErrorKind.DATA:
                    raise
            # Not even kept whole (it holds what the database refuses in any column): kept as
            # a digest under its id, as an unreadable message is, rather than retried for ever.
            digest = digest_row(repr(rows[0]).encode(), rows[0][0], None, reason)
            return self.sink.store([], [digest], session, replay=True)
        if rows:
            half = len(rows) // 2
            a = self._store_split(rows[:half], quarantined, session, replay)
            b = self._store_split(rows[half:], [], session, replay)
        else:
            half = len(quarantined) // 2
            a = self._store_split([], quarantined[:half], session, replay)
            b = self._store_split([], quarantined[half:], session, replay)
        return a[0] + b[0], a[1] + b[1]

    def _seal_ahead(self) -> None:
        """On the database thread, while the server ends a COPY: resolve and seal the groups
        waiting behind it. Only reads the sink's committed caches; a group that needs the
        database, or any failure, is left for the sink to do as usual."""
        try:
            # The next group only: this runs inside the transaction, its chain locks held,
            # and a backlog can queue two fetches of every partition behind it.
            size = 0
            for item in list(self._waiting):
                if size >= self.max_events:
                    break
                size += len(item.rows) + len(item.quarantined)
                if item.ready is None and item.rows:
                    resolved = self.sink.resolve_from_cache(item.rows)
                    if resolved is not None:
                        item.ready = (resolved, seal(resolved))
        except Exception:  # noqa: BLE001 - an optimisation: the sink seals them itself
            return


def _fail(items: list[_Waiting]) -> None:
    """Not stored: not to be acknowledged (a batch already told keeps its outcome)."""
    for item in items:
        if not item.done.done():
            item.done.set_result(False)


def _decoded(msgs: list[Any], keys: Mapping[str, bytes]) -> tuple[list[Row], list[QuarantineRow]]:
    """Every event of the messages, in stream order; what cannot be read, as quarantine rows
    (one bad event of a batch costs that event only)."""
    rows: list[Row] = []
    quarantined: list[QuarantineRow] = []
    for msg in msgs:
        found, kept, _ = decode_stream_message(msg.data, msg.headers, msg.subject, keys)
        rows += found
        quarantined += kept
    return rows, quarantined
