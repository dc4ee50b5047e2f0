"""The publishing sink: prepared batches go to JetStream instead of the database.

The writer (queue, batches, preparation, spool, replay, stats) is the same as for a database;
only where a batch goes differs. A batch counts as stored once JetStream has acknowledged every
event in it; otherwise the whole batch raises SinkError and the writer spools it, to publish it
again later under the same ids. Every event carries ``Nats-Msg-Id`` = its id, so the server drops
repeats inside its duplicate window and the ingesters drop the rest.

Acknowledgements are collected by one subscription on a private inbox rather than through
``publish_async``, whose futures are never resolved when the server answers with an error; the
whole batch has one deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from .._chain.canonical import Sealed
from .._db.rows import ROW_ID, ROW_WORKSPACE, QuarantineRow, Row
from .._events import WorkspaceRef
from .._sinks.base import ErrorKind, Sink, SinkError
from ._client import Client, LoopThread, connect, nats
from .partitions import STREAM, count_from_subjects, partition_of, subject
from .wire import encode_quarantine, encode_row

_PENDING_BYTES = 4 * 1024 * 1024


class _Batch:
    """The acknowledgements one batch waits for."""

    def __init__(self, number: int, size: int) -> None:
        self.number = number
        self.missing = set(range(size))
        self.error: str | None = None
        self.done = asyncio.Event()

    def answer(self, index: int, data: bytes, status: str | None) -> None:
        if index not in self.missing:
            return  # a repeat answer
        if status is not None or b'"seq"' not in data or b'"error"' in data:
            # 503 (no stream listens: not set up, or another partition count), or an error
            # (stream full: discard-new), or anything that is not a PubAck.
            self.error = _error_code(data, status)
            self.done.set()
            return
        self.missing.discard(index)
        if not self.missing:
            self.done.set()


def _error_code(data: bytes, status: str | None) -> str:
    if status is not None:
        return f"nats-status-{status}"
    marker = b'"err_code":'
    at = data.find(marker)
    if at >= 0:
        code = data[at + len(marker) :].split(b",")[0].split(b"}")[0].strip()
        if code.isdigit():
            return f"nats-{code.decode()}"
    return "nats-refused"


_HEADERS = "NATS/1.0\r\nNats-Expected-Stream: " + STREAM + "\r\nNats-Msg-Id: {}\r\n\r\n"


def _hpub(subject: str, reply: str, msg_id: str, body: bytes) -> bytes:
    headers = _HEADERS.format(msg_id).encode()
    size = len(headers)
    return b"%s%s\r\n" % (
        f"HPUB {subject} {reply} {size} {size + len(body)}\r\n".encode() + headers,
        body,
    )


async def _send(nc: Client, data: bytes) -> None:
    """Queue raw protocol bytes on the connection, as nc.publish() does for each frame."""
    if not nc.is_connected:
        raise SinkError(ErrorKind.TRANSIENT, "nats-disconnected")
    await nc._send_command(data)
    await nc._flush_pending()


class NatsSink(Sink):
    def __init__(self, url: str, *, timeout: float) -> None:
        super().__init__()
        self._url = url
        self._timeout = timeout
        self._runner: LoopThread | None = None
        self._nc: Client | None = None
        self._count: int | None = None
        self._inbox = ""
        self._batch: _Batch | None = None
        self._numbers = 0

    # ---- on the writer thread ------------------------------------------------------------

    def write(
        self,
        rows: list[Row],
        quarantined: list[QuarantineRow],
        *,
        replay: bool,
        sealed: list[Sealed] | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> tuple[int, int]:
        del replay, sealed  # ids are kept, so a replay is de-duplicated downstream
        messages = [(r[ROW_ID], r[ROW_WORKSPACE], encode_row(r)) for r in rows]
        messages += [(q[0], None, encode_quarantine(q)) for q in quarantined]
        if not messages:
            return 0, 0
        if self._runner is None:
            self._runner = LoopThread("auditledger-nats")
        # Ends a little before the writer's own deadline, so this batch fails as a timeout
        # here rather than through abort().
        budget = self._timeout * 0.9
        try:
            # The loop thread sends and collects acknowledgements while this (the writer's)
            # thread prepares the next batch.
            self._runner.run(self._publish(messages, budget), budget + 0.5, meanwhile)
        except SinkError:
            self._count = None  # the stream may have changed: read it again next time
            raise
        except TimeoutError as exc:
            raise SinkError(ErrorKind.TRANSIENT, "nats-timeout") from exc
        except Exception as exc:
            self._count = None
            raise SinkError(ErrorKind.TRANSIENT, type(exc).__name__) from exc
        return len(rows), len(quarantined)

    def resolve_from_cache(self, rows: list[Row]) -> list[Row] | None:
        return None  # the ingester resolves workspaces and chains: nothing to seal ahead here

    def abort(self) -> None:
        runner, batch = self._runner, self._batch
        if runner is not None and batch is not None:
            with contextlib.suppress(RuntimeError):
                runner.loop.call_soon_threadsafe(batch.done.set)

    def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        if self._nc is not None:
            with contextlib.suppress(Exception):
                runner.run(self._nc.close(), 2.0)
            self._nc = None
        runner.stop()

    # Sink's workspace hooks are the database's business, not a publisher's.
    def _existing_workspaces(self, ids: list[Any]) -> set[Any]:
        raise NotImplementedError

    def _ensure_workspaces(self, refs: list[WorkspaceRef]) -> dict[str, Any]:
        raise NotImplementedError

    def _existing_event_ids(self, ids: list[Any]) -> set[Any]:
        raise NotImplementedError

    # ---- on the loop thread --------------------------------------------------------------

    async def _ready(self, budget: float) -> tuple[Client, int]:
        nc = self._nc
        if nc is None or nc.is_closed:
            try:
                nc = await connect(
                    self._url, timeout=budget, name="auditledger", pending_size=_PENDING_BYTES
                )
            except Exception as exc:
                raise SinkError(ErrorKind.TRANSIENT, "nats-unreachable") from exc
            self._nc = nc
            self._inbox = nc.new_inbox() + "."
            await nc.subscribe(self._inbox + "*.*", cb=self._on_ack)
        if not nc.is_connected:
            raise SinkError(ErrorKind.TRANSIENT, "nats-disconnected")
        if self._count is None:
            try:
                info = await nc.jetstream(timeout=budget).stream_info(STREAM)
            except nats.js.errors.NotFoundError as exc:
                # Transient: `auditledger nats setup` may run any moment; until then, spool.
                raise SinkError(ErrorKind.TRANSIENT, "nats-no-stream") from exc
            count = count_from_subjects(info.config.subjects)
            if count is None:
                raise SinkError(ErrorKind.PERMANENT, "nats-foreign-stream")
            self._count = count
        return nc, self._count

    async def _publish(self, messages: list[tuple[Any, object, bytes]], budget: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        nc, count = await self._ready(budget)
        self._numbers += 1
        batch = _Batch(self._numbers, len(messages))
        self._batch = batch
        prefix = f"{self._inbox}{batch.number}."
        try:
            # One write of the whole batch in NATS's wire format (HPUB, documented protocol):
            # nc.publish() builds each frame through several Python calls, which made it the
            # publisher's bottleneck (about 19 µs an event here, against 3 µs like this).
            frames = [
                _hpub(subject(count, partition_of(ws, count)), f"{prefix}{i}", str(eid), body)
                for i, (eid, ws, body) in enumerate(messages)
            ]
            await _send(nc, b"".join(frames))
            await nc.flush(max(1, int(deadline - loop.time())))
            remaining = deadline - loop.time()
            if remaining > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(batch.done.wait(), remaining)
        finally:
            self._batch = None
        if batch.error is not None:
            raise SinkError(ErrorKind.TRANSIENT, batch.error)
        if batch.missing:
            raise SinkError(ErrorKind.TRANSIENT, "nats-timeout")

    async def _on_ack(self, msg: Any) -> None:
        batch = self._batch
        if batch is None:
            return
        number, _, index = msg.subject[len(self._inbox) :].partition(".")
        if number != str(batch.number) or not index.isdigit():
            return  # an answer for a batch that already gave up
        headers = msg.headers
        status = headers.get("Status") if headers else None
        batch.answer(int(index), msg.data, status)
