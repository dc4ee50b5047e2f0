"""``auditledger ingest``: stores what the stream holds, exactly once, in PostgreSQL.

Any number of processes may run. Each claims a fair share of the partitions (``ownership``)
and, per owned partition, pulls batches from the partition's durable consumer. Batches are
stored in one transaction (``group``) by the writer's own PostgreSQL sink (workspaces resolved,
ids already stored dropped, chains extended under their locks, unreadable messages
quarantined), and only once it has committed are their messages acknowledged. Whatever dies
when, an event is then either stored and acknowledged, or stored and redelivered (and dropped
as already stored), or not stored and redelivered.

A partition's consumer is created afresh by each new owner: the messages its previous owner
had fetched and not acknowledged are then delivered at once, not after the ack wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from .._sinks.base import SinkError
from ._client import Client, connect, nats
from .group import GroupStore
from .ownership import IngestSink
from .partitions import STREAM, consumer_name, count_from_subjects, subject
from .puller import Puller

log = logging.getLogger("auditledger")

ACK_WAIT = 30.0  # far above a batch's commit; a new owner does not wait for it (see above)
_REBALANCE_EVERY = 1.0


@dataclass
class IngestOptions:
    batch_size: int = 1000
    fetch_timeout: float = 1.0


class Ingester:
    def __init__(self, nats_url: str, sink: IngestSink, options: IngestOptions) -> None:
        self._url = nats_url
        self._sink = sink
        self._options = options
        self._db = asyncio.Lock()  # one session: one statement at a time
        self._group = GroupStore(sink, self._db, self._report, max_events=options.batch_size * 5)
        self._tasks: dict[int, tuple[asyncio.Task[None], asyncio.Event]] = {}
        self._session = -1
        self._count = 0
        self.owned: set[int] = set()
        self.stats = self._group.stats
        self._reported: dict[str, float] = {}

    async def run(self, stop: asyncio.Event) -> None:
        # The first connection retries until the server answers: a stop must not wait for it.
        connecting = asyncio.create_task(
            connect(self._url, timeout=5, name="auditledger-ingest", pending_size=2**22)
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
            while not stop.is_set():
                await self._rebalance(nc)
                await self._tick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _REBALANCE_EVERY)
        finally:
            self._group.closing = True
            await self._stop_all()
            with contextlib.suppress(SinkError):
                await self._in_db(self._sink.release, set(self.owned))
            self.owned.clear()
            await self._in_db(self._sink.close)
            await nc.close()

    async def _partition_count(self, nc: Client, stop: asyncio.Event) -> int:
        js = nc.jetstream()
        while True:
            try:
                info = await js.stream_info(STREAM)
                count = count_from_subjects(info.config.subjects)
                if count:
                    return count
            except nats.js.errors.NotFoundError:
                pass
            self._report("stream", "auditledger ingest: no stream yet (`auditledger nats setup`)")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), _REBALANCE_EVERY)
            if stop.is_set():
                raise asyncio.CancelledError

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
        js = nc.jetstream()
        name = consumer_name(partition)
        try:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_consumer(STREAM, name)
            await js.add_consumer(
                STREAM,
                nats.js.api.ConsumerConfig(
                    durable_name=name,
                    filter_subject=subject(self._count, partition),
                    ack_policy=nats.js.api.AckPolicy.EXPLICIT,
                    deliver_policy=nats.js.api.DeliverPolicy.ALL,
                    ack_wait=ACK_WAIT,
                    max_deliver=-1,  # never strand an audit event
                    max_ack_pending=self._options.batch_size * 2,
                ),
            )
            puller = Puller(nc, STREAM, name, self._options.batch_size)
            await puller.start()
        except Exception as exc:  # noqa: BLE001 - retried by the next rebalance
            self._report(
                "consumer", f"auditledger ingest: consumer set-up failed ({type(exc).__name__})"
            )
            await self._give_back(partition)
            return
        try:
            await self._pull(puller, session, stopping)
        except Exception as exc:  # noqa: BLE001 - a bug costs this partition a restart, no more
            self._report("internal", f"auditledger ingest: partition error ({type(exc).__name__})")
            if not stopping.is_set():
                await self._give_back(partition)
        finally:
            await puller.close()

    async def _pull(self, puller: Puller, session: int, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                msgs = await puller.take(self._options.fetch_timeout)
            except Exception as exc:  # noqa: BLE001 - the server is away: try again
                self._report("fetch", f"auditledger ingest: pull failed ({type(exc).__name__})")
                await asyncio.sleep(self._options.fetch_timeout)
                continue
            if not msgs:
                continue
            if stopping.is_set():
                return  # not acknowledged: the next owner gets them again
            if not await self._group.store(msgs, session):
                return
            await puller.ack(msgs)

    async def _give_back(self, partition: int) -> None:
        self._tasks.pop(partition, None)
        self.owned.discard(partition)
        with contextlib.suppress(SinkError):
            await self._in_db(self._sink.release, {partition})

    def _report(self, key: str, message: str) -> None:
        now = time.monotonic()
        if now >= self._reported.get(key, 0.0):
            self._reported[key] = now + 60.0
            log.warning(message)
