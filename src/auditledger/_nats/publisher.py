"""The publishing sink: prepared batches go to JetStream instead of the database.

The writer (queue, batches, preparation, spool, replay, stats) is the same as for a database;
only where a batch goes differs. A batch is cut into stream messages (``messages``): per
partition, in order, up to ``MAX_EVENTS`` events or ``MAX_BYTES`` bytes each, so that the
per-message costs of NATS (a publish and its acknowledgement here, a delivery and an ack in
the ingester) are paid once per many events. A batch counts as stored once JetStream has
acknowledged every message of it; otherwise the whole batch raises SinkError and the writer
spools it, to publish it again later under the same ids.

``Nats-Msg-Id`` is the event's id for a message of one event, else a SHA-256 of its events'
ids: the same batch published again (a replay of the spool) makes the same messages, which
the server drops inside its duplicate window; the ingesters drop any other repeat by event id.

Bodies travel compressed (one zstd frame each, header ``Content-Encoding: zstd``, see
``wire``): nats-server's work an event follows the bytes it stores and delivers. Every message
is published with nats-py's ``JetStream.publish``, each with the batch's deadline as its
timeout (not ``publish_async``, whose futures are never resolved when the
server answers with an error), all of a batch at once. With a publisher key, each message
is signed (``auth``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

from .._chain.canonical import Sealed
from .._db.rows import ROW_ID, ROW_WORKSPACE, QuarantineRow, Row
from .._events import WorkspaceRef
from .._sinks.base import ErrorKind, Sink, SinkError
from ._client import Client, LoopThread, connect, nats
from .auth import MAC_HEADER, NatsKey, sign
from .partitions import STREAM, count_from_subjects, partition_of, subject
from .wire import ENCODING_HEADER, ZSTD, compress, encode_batch, encode_item

_PENDING_BYTES = 4 * 1024 * 1024
MAX_EVENTS = 500  # events in one stream message
MAX_BYTES = 256 * 1024  # encoded bytes of one message (the server's max_payload is 1 MiB)

# (subject, Nats-Msg-Id, body, events): one stream message
Message = tuple[str, str, bytes, int]


def message_id(ids: list[Any]) -> str:
    """The event's own id for one event; a digest of the ids, in order, for several."""
    if len(ids) == 1:
        return str(ids[0])
    digest = hashlib.sha256()
    for event_id in ids:
        digest.update(event_id.bytes)
    return digest.hexdigest()


def messages(rows: list[Row], quarantined: list[QuarantineRow], count: int) -> list[Message]:
    """A batch as stream messages: each partition's events in order, cut at ``MAX_EVENTS``
    or ``MAX_BYTES``. Deterministic: the same batch always makes the same messages."""
    parts: dict[int, list[tuple[Any, bool, bytes]]] = {}
    known: dict[object, int] = {}  # a batch names few workspaces: hash each once
    for row in rows:
        ws = row[ROW_WORKSPACE]
        partition = known.get(ws)
        if partition is None:
            partition = known[ws] = partition_of(ws, count)
        parts.setdefault(partition, []).append((row[ROW_ID], False, encode_item(row)))
    # Quarantine rows name no workspace: they travel with the events of no workspace.
    for q in quarantined:
        parts.setdefault(partition_of(None, count), []).append((q[0], True, encode_item(q)))
    out: list[Message] = []
    for partition, items in parts.items():
        name = subject(count, partition)
        for chunk in _chunks(items):
            body = encode_batch([b for _, q, b in chunk if not q], [b for _, q, b in chunk if q])
            out.append((name, message_id([i for i, _, _ in chunk]), body, len(chunk)))
    return out


def _chunks(items: list[tuple[Any, bool, bytes]]) -> Iterator[list[tuple[Any, bool, bytes]]]:
    chunk: list[tuple[Any, bool, bytes]] = []
    size = 0
    for item in items:
        if chunk and (len(chunk) >= MAX_EVENTS or size + len(item[2]) > MAX_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += len(item[2]) + 1
    if chunk:
        yield chunk


def _refused(exc: BaseException) -> SinkError:
    """What a publish that failed says, as a SinkError (codes only, never the URL)."""
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        # 503: no stream listens on the subject (not set up, or another partition count).
        return SinkError(ErrorKind.TRANSIENT, "nats-no-stream")
    if isinstance(exc, nats.js.errors.APIError):
        # The stream full (discard-new: err_code 10077), or another refusal.
        return SinkError(ErrorKind.TRANSIENT, f"nats-{exc.err_code or exc.code or 'refused'}")
    if isinstance(exc, TimeoutError):
        return SinkError(ErrorKind.TRANSIENT, "nats-timeout")
    return SinkError(ErrorKind.TRANSIENT, type(exc).__name__)


class NatsSink(Sink):
    def __init__(self, url: str, *, timeout: float, key: NatsKey | None = None) -> None:
        super().__init__()
        self._url = url
        self._timeout = timeout
        self._key = key  # signs every message (see ``auth``)
        self._runner: LoopThread | None = None
        self._nc: Client | None = None
        self._count: int | None = None
        self._batch: asyncio.Future[None] | None = None

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
        if not rows and not quarantined:
            return 0, 0
        if self._runner is None:
            self._runner = LoopThread("auditledger-nats")
        # Ends a little before the writer's own deadline, so this batch fails as a timeout
        # here rather than through abort().
        budget = self._timeout * 0.9
        try:
            # The loop thread sends and collects acknowledgements while this (the writer's)
            # thread prepares the next batch.
            self._runner.run(self._publish(rows, quarantined, budget), budget + 0.5, meanwhile)
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
                runner.loop.call_soon_threadsafe(batch.cancel)

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

    async def _publish(
        self, rows: list[Row], quarantined: list[QuarantineRow], budget: float
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        nc, count = await self._ready(budget)
        batch = messages(rows, quarantined, count)
        js = nc.jetstream()
        remaining = max(0.1, deadline - loop.time())
        key = self._key
        sends = []
        for name, mid, body, _ in batch:
            data = compress(body)
            headers = _headers_for(key, name, mid, data)
            sends.append(js.publish(name, data, timeout=remaining, stream=STREAM, headers=headers))
        self._batch = asyncio.ensure_future(_all(sends))
        try:
            await self._batch
        except asyncio.CancelledError as exc:
            raise SinkError(ErrorKind.TRANSIENT, "nats-timeout") from exc
        finally:
            self._batch = None


def _headers_for(key: NatsKey | None, name: str, mid: str, data: bytes) -> dict[str, str]:
    headers = {"Nats-Msg-Id": mid, ENCODING_HEADER: ZSTD}
    if key is not None:
        headers[MAC_HEADER] = sign(key, name, mid, ZSTD, data)
    return headers


async def _all(sends: list[Any]) -> None:
    """Every publish of a batch at once; the first refusal (or timeout) is the batch's."""
    results = await asyncio.gather(*sends, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise _refused(result) from result
