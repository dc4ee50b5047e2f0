"""``auditledger ingest``: stores what the stream holds, exactly once, in PostgreSQL.

Any number of processes may run. Each claims a fair share of the partitions (``ownership``)
and, per owned partition, pulls batches from the partition's durable consumer. Batches are
stored in one transaction (``group``) by the writer's own PostgreSQL sink (workspaces resolved,
ids already stored dropped, chains extended under their locks, unreadable messages
quarantined), and only once it has committed are their messages acknowledged. Whatever dies
when, an event is then either stored and acknowledged, or stored and redelivered (and dropped
as already stored), or not stored and redelivered.

A partition's consumer is created afresh by each new owner, and again after the connection
to the server was re-established (a pull subscription does not always survive a server
restart, nats.py#504): the messages fetched and not acknowledged are then delivered at once,
not after the ack wait. Each stream message carries many events (see ``publisher``), so
nats-py's own ``fetch`` and ``Msg.ack`` cost little per event; the next fetch runs while a
batch is being stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .._sinks.base import SinkError
from ._client import Client, connect
from .consumers import consumer_gone, read_partition_count, subscribe
from .group import GroupStore
from .ownership import IngestSink

log = logging.getLogger("auditledger")

# How soon an ingester that joins gets its share: the others notice it, and it takes what
# they give back, at their next rebalances (two cheap queries each).
_REBALANCE_EVERY = 0.25
_NO_STREAM_EVERY = 1.0  # how often to look again for a stream not set up yet
_COUNT_EVERY = 5.0  # how often to look whether the partition count changed (nats setup)
_BUSY_WAIT = 0.02  # seconds a fetch of messages said to be waiting may take at most
_IN_FLIGHT = 2  # a partition's batches handed in and not yet committed, at most


@dataclass
class IngestOptions:
    batch_size: int = 1000  # events per transaction, about (whole messages are kept together)
    fetch_timeout: float = 1.0
    fetch_messages: int = 16  # stream messages per fetch, each up to 500 events
    # Seconds a partition goes without messages before asking whether its consumer still
    # exists: a fetch from a consumer that is gone times out empty, like an idle one.
    consumer_check: float = 10.0
    # Publisher keys by key id (``auth.key_ring``): when any, unsigned messages are refused.
    keys: dict[str, bytes] = field(default_factory=dict, repr=False)


class Ingester:
    def __init__(self, nats_url: str, sink: IngestSink, options: IngestOptions) -> None:
        self._url = nats_url
        self._sink = sink
        self._options = options
        self._db = asyncio.Lock()  # one session: one statement at a time
        self._group = GroupStore(
            sink, self._db, self._report, max_events=options.batch_size * 5, keys=options.keys
        )
        self._generation = 0  # connections re-established so far
        self._tasks: dict[int, tuple[asyncio.Task[None], asyncio.Event]] = {}
        self._session = -1
        self._count = 0
        self._look_again = False  # read the partition count at the next rebalance
        self._tables = False  # whether the session's database has the audit tables
        self.owned: set[int] = set()
        self.stats = self._group.stats
        self._reported: dict[str, float] = {}

    @property
    def keyed(self) -> bool:
        """Whether it stores signed messages only (it holds publisher keys)."""
        return bool(self._options.keys)

    async def run(self, stop: asyncio.Event) -> None:
        # The first connection retries until the server answers: a stop must not wait for it.
        connecting = asyncio.create_task(
            connect(
                self._url,
                timeout=5,
                name="auditledger-ingest",
                pending_size=2**22,
                reconnected=self._reconnected,
                failed=self._connection_failed,
            )
        )
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([connecting, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not connecting.done():
            connecting.cancel()
            with contextlib.suppress(BaseException):
                await connecting
            return
        nc = connecting.result()
        try:
            self._count = await self._partition_count(nc, stop)
            looked = time.monotonic()
            while not stop.is_set():
                if self._look_again or time.monotonic() - looked >= _COUNT_EVERY:
                    self._look_again, looked = False, time.monotonic()
                    await self._follow_partition_count(nc)
                await self._rebalance(nc)
                await self._tick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _REBALANCE_EVERY)
        finally:
            self._group.closing = True
            await self._stop_all()
            if self.owned:  # (none: no need to reach the database only to close)
                await self._release(set(self.owned))
            self.owned.clear()
            await self._in_db(self._sink.close)
            await nc.close()

    async def _partition_count(self, nc: Client, stop: asyncio.Event) -> int:
        """The stream's partition count, once there is a stream; 0 when stopped first."""
        while True:
            count = await read_partition_count(nc, self._report)
            if count:
                return count
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _NO_STREAM_EVERY)
            if stop.is_set():
                return 0

    async def _follow_partition_count(self, nc: Client) -> None:
        """After ``nats setup --partitions`` (on an empty stream) the subjects are new: every
        partition is given up and the new ones are shared out at the next rebalances."""
        count = await read_partition_count(nc, self._report)
        if not count or count == self._count:
            return
        log.warning(
            "auditledger ingest: the stream now has %d partitions (was %d)", count, self._count
        )
        await self._stop_all()
        await self._release(set(self.owned))
        self.owned.clear()
        self._count = count

    async def _reconnected(self) -> None:
        self._generation += 1

    async def _connection_failed(self, exc: Exception) -> None:
        """Without this a mistyped URL, or the server away, looks like an idle stream."""
        self._report(
            "nats", f"auditledger ingest: NATS connection failed ({type(exc).__name__}), retrying"
        )

    async def _in_db(self, fn: Any, *args: Any) -> Any:
        async with self._db:
            return await asyncio.to_thread(fn, *args)

    # ---- ownership -----------------------------------------------------------------------

    async def _rebalance(self, nc: Client) -> None:
        try:
            session = await self._in_db(self._sink.connect)
            if session != self._session:
                # A new session holds no lock: whatever we owned may have an owner already.
                await self._stop_all()
                self.owned.clear()
                self._session = session
                self._tables = False
            if not self._tables:
                # Else every message would fail to store, over and over, saying only 42P01.
                self._tables = await self._in_db(self._sink.has_tables)
                if not self._tables:
                    self._report("db", "auditledger ingest: the audit tables are missing: run"
                                 " `auditledger db upgrade`")  # fmt: skip
                    return
            take, give = await self._in_db(self._sink.rebalance, self._count, set(self._tasks))
            await self._stop_some(sorted(give))
            if give:
                await self._in_db(self._sink.release, give)
        except SinkError as exc:
            self._report("db", f"auditledger ingest: database unavailable ({exc.code})")
            await self._stop_all()
            self.owned.clear()
            await self._in_db(self._sink.close)
            return
        self.owned -= give
        for p in sorted(take):
            stopping = asyncio.Event()
            task = asyncio.create_task(self._consume(nc, p, session, stopping))
            self._tasks[p] = (task, stopping)
            self.owned.add(p)

    async def _stop_all(self) -> None:
        await self._stop_some(list(self._tasks))

    async def _stop_some(self, partitions: list[int]) -> None:
        stopped = [self._tasks.pop(p) for p in partitions if p in self._tasks]
        for _, stopping in stopped:
            stopping.set()
        # A batch being stored finishes (commit, then ack); a fetch ends within its timeout.
        await asyncio.gather(*(task for task, _ in stopped), return_exceptions=True)

    async def _tick(self) -> None:
        if self._sink.checkpoint_schedule is None or not self._sink.alive(self._session):
            return
        try:
            await self._in_db(self._sink.tick, time.monotonic())
        except SinkError as exc:
            self._report("checkpoint", f"auditledger ingest: checkpoint failed ({exc.code})")

    # ---- one partition -------------------------------------------------------------------

    async def _consume(
        self, nc: Client, partition: int, session: int, stopping: asyncio.Event
    ) -> None:
        while not stopping.is_set():
            generation = self._generation
            try:
                # Unacknowledged at most: a fetch in flight while the batches before it store.
                pending = self._options.fetch_messages * (_IN_FLIGHT + 1)
                sub = await subscribe(nc, self._count, partition, pending)
            except Exception as exc:  # noqa: BLE001 - retried by the next rebalance
                self._report(
                    "consumer", f"auditledger ingest: consumer set-up failed ({type(exc).__name__})"
                )
                self._look_again = True  # the stream may have new partitions
                await self._give_back(partition)
                return
            try:
                again = await self._pull(sub, session, stopping, generation)
            except Exception as exc:  # noqa: BLE001 - a bug costs this partition a restart
                self._report(
                    "internal", f"auditledger ingest: partition error ({type(exc).__name__})"
                )
                if not stopping.is_set():
                    await self._give_back(partition)
                return
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            if not again:
                if not stopping.is_set():
                    # Not stored (the session was lost, or the database refuses for good): a
                    # later rebalance takes the partition again, with a fresh consumer.
                    await self._give_back(partition)
                return

    async def _pull(self, sub: Any, session: int, stopping: asyncio.Event, generation: int) -> bool:
        """Fetch, store, acknowledge, until stopped; True when the connection was
        re-established meanwhile (the consumer is then recreated).

        Up to ``_IN_FLIGHT`` batches are handed to the group store before the first of them
        has committed (see ``group``), and one fetch runs meanwhile; batches are acknowledged
        in the order fetched, each once committed."""
        fetching = asyncio.ensure_future(self._fetch(sub, waiting=0))
        # A partition given up (to an ingester that joined, or at shutdown) stops at once,
        # not at the end of a fetch that may wait a whole fetch_timeout for nothing.
        stopped = asyncio.ensure_future(stopping.wait())
        storing: deque[tuple[list[Any], asyncio.Future[bool]]] = deque()
        heard = time.monotonic()  # when the consumer last delivered, or was last seen
        try:
            while not stopping.is_set():
                waits: set[asyncio.Future[Any]] = {stopped}
                if storing:
                    waits.add(storing[0][1])
                if len(storing) < _IN_FLIGHT:
                    waits.add(fetching)
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if not await self._acknowledge(storing):
                    return False  # not stored: the next owner gets them again
                if stopping.is_set():
                    break
                if len(storing) >= _IN_FLIGHT or not fetching.done():
                    continue
                msgs = fetching.result()
                if msgs:
                    heard = time.monotonic()
                elif time.monotonic() - heard >= self._options.consumer_check:
                    heard = time.monotonic()
                    if await consumer_gone(sub, self._report):
                        await self._finish(storing)
                        return True
                if self._generation != generation:
                    # These not acknowledged: the recreated consumer delivers them again.
                    await self._finish(storing)
                    return True
                # The server sends the next messages while these are stored.
                fetching = asyncio.ensure_future(self._fetch(sub, waiting=_waiting(msgs)))
                if msgs:
                    storing.append((msgs, self._group.submit(msgs, session)))
            await self._finish(storing)
            return False
        finally:
            stopped.cancel()
            fetching.cancel()
            with contextlib.suppress(BaseException):
                await fetching
            # Left by an exception: nothing more is acknowledged, but no batch of this
            # partition may be committed once its lock is given back (the caller's next
            # step), so wait for them to end (each does: stored, or failed).
            if storing:
                with contextlib.suppress(BaseException):
                    await asyncio.wait([done for _, done in storing])

    @classmethod
    async def _finish(cls, storing: deque[tuple[list[Any], asyncio.Future[bool]]]) -> None:
        """What was handed in is stored (or fails) and acknowledged: whoever reads the
        partition next does not get it again."""
        if storing:
            await asyncio.wait([done for _, done in storing])
            await cls._acknowledge(storing)

    @staticmethod
    async def _acknowledge(storing: deque[tuple[list[Any], asyncio.Future[bool]]]) -> bool:
        """Acknowledges the batches at the front that have committed, in order; False when
        one of them was not stored (nothing after it is acknowledged)."""
        while storing and storing[0][1].done():
            msgs, done = storing.popleft()
            if not done.result():
                return False
            for msg in msgs:
                await msg.ack()
        return True

    async def _fetch(self, sub: Any, *, waiting: int) -> list[Any]:
        """The next messages. nats-py's fetch of n messages returns once n arrived or at its
        timeout, so waiting long for many would hold back the first. So: with messages
        waiting (a backlog), ask for those, which come at once; else wait long for one.
        (Asking for 16 whenever the last fetch found any left, while publishers trickle, a
        request that expired empty after most batches, and a backlog of 3 waited 20 ms.)"""
        options = self._options
        try:
            if waiting:
                count = min(waiting, options.fetch_messages)
                msgs: list[Any] = await sub.fetch(count, timeout=_BUSY_WAIT)
            else:
                msgs = await sub.fetch(1, timeout=options.fetch_timeout)
        except TimeoutError:
            return []  # nothing arrived within the timeout
        except Exception as exc:  # noqa: BLE001 - the server is away: try again
            self._report("fetch", f"auditledger ingest: pull failed ({type(exc).__name__})")
            await asyncio.sleep(self._options.fetch_timeout)
            return []
        return msgs

    async def _give_back(self, partition: int) -> None:
        self._tasks.pop(partition, None)
        self.owned.discard(partition)
        await self._release({partition})

    async def _release(self, partitions: set[int]) -> None:
        """Unlocks partitions this ingester no longer works on. If that fails, the session
        ends instead: its locks end with it, where a lock left held would keep every other
        ingester off the partition for as long as the session lived."""
        try:
            await self._in_db(self._sink.release, partitions)
        except SinkError:
            await self._in_db(self._sink.close)

    def _report(self, key: str, message: str) -> None:
        now = time.monotonic()
        if now >= self._reported.get(key, 0.0):
            self._reported[key] = now + 60.0
            log.warning(message)


def _waiting(msgs: list[Any]) -> int:
    """Messages of the partition not delivered yet, as the server counted when it sent the
    last of ``msgs`` (JetStream's metadata); 0 for none or when the metadata is unreadable."""
    if not msgs:
        return 0
    try:
        return max(0, int(msgs[-1].metadata.num_pending))
    except Exception:  # noqa: BLE001 - not a JetStream delivery: as if nothing waits
        return 0
