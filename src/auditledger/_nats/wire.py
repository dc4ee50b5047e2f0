"""The body of a stream message: many prepared events and quarantine rows (version 2), or
one of either (version 1, still read: a stream may hold messages of publishers not yet
upgraded when the ingesters are).

Events are published after preparation (validated, sanitised, redacted), so the stream holds
nothing the database would not. The workspace is left as the caller gave it (an id or a
``WorkspaceRef``): the ingester resolves it inside the transaction that stores the event.
Times travel as whole microseconds, exactly as PostgreSQL stores them.

Version 2 is ``{"v": 2, "rows": [row, ...], "quarantine": [row, ...]}``, each row a list in the
version-1 layout. Rows are encoded one by one (``encode_item``) so that the publisher can cut
messages at a size without encoding twice; an ingester (``decode``) quarantines one bad event
of a message alone and stores the good ones around it.

On the stream a body may be compressed: one zstd frame, said by the header
``Content-Encoding: zstd`` (``compress``; ``decode.stream_body`` reads it). Events of one
partition repeat most of their bytes (keys, user agents, workspace ids), and nats-server's
work grows with the bytes it stores and delivers. A body never decompresses to more than
``MAX_BODY``, what the server would take uncompressed, so a hand-made message cannot make an
ingester allocate more.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from .._errors import MissingExtraError

try:
    import zstandard
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("nats", "zstandard") from exc

from .._db.rows import ROW_CREATED, ROW_ID, ROW_WORKSPACE, QuarantineRow, Row
from .._events import WorkspaceRef
from .._jsonbytes import dumps_kept

VERSION = 2
ENCODING_HEADER = "Content-Encoding"
ZSTD = "zstd"
MAX_BODY = 1024 * 1024  # nats-server's default max_payload: the most a body could be plain
_LEVEL = 1  # the fastest level: 5% of the bytes on the bench's events, 0.5 µs an event
VERSION_1 = 1
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_local = threading.local()


class WireError(ValueError):
    """A message that is not an event of ours: the ingester quarantines it."""


class RefusedAction(WireError):
    """An event naming an action only the library's direct paths write: quarantined as
    refused, not as unreadable."""


# What ``auditledger verify`` relies on (a gdpr.erasure event accepts removed values) or what
# only the owner's commands write: never from the stream, where a hand-made message would
# skip the publisher's reserved-namespace check. ``audit_log.*`` (records of reads) may come
# through a NATS logger handed to the viewer, and prove nothing.
DIRECT_ONLY = ("gdpr.", "retention.")


def _micros(value: datetime) -> int:
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _row_fields(row: Row) -> list[Any]:
    fields: list[Any] = list(row)
    fields[ROW_ID] = str(row[ROW_ID])
    ws = row[ROW_WORKSPACE]
    if isinstance(ws, WorkspaceRef):
        fields[ROW_WORKSPACE] = {"ref": [ws.team_id, ws.enterprise_id, ws.name, ws.is_active]}
    elif ws is not None:
        fields[ROW_WORKSPACE] = str(ws)
    fields[ROW_CREATED] = _micros(row[ROW_CREATED])
    return fields


def _quarantine_fields(row: QuarantineRow) -> list[Any]:
    event_id, reason, payload, created_at = row
    return [str(event_id), reason, payload.decode(), _micros(created_at)]


def encode_row(row: Row) -> bytes:
    """A version-1 message: one event (what publishers before version 2 sent)."""
    return orjson.dumps({"v": VERSION_1, "row": _row_fields(row)})


def encode_quarantine(row: QuarantineRow) -> bytes:
    """A version-1 message: one quarantine row."""
    return orjson.dumps({"v": VERSION_1, "quarantine": _quarantine_fields(row)})


def _wire_value(value: object) -> object:
    """What orjson hands back to ``encode_item`` from a row: ``created_at`` (as whole
    microseconds), a ``WorkspaceRef``, and an id of a subclass of ``uuid.UUID`` (a caller's
    workspace id may be one, asyncpg's for instance; its ``__str__`` may differ). Plain ids
    orjson writes itself, as ``str(id)`` would."""
    if isinstance(value, datetime):
        return _micros(value)
    if isinstance(value, WorkspaceRef):
        return {"ref": [value.team_id, value.enterprise_id, value.name, value.is_active]}
    if isinstance(value, uuid.UUID):
        return str(uuid.UUID(int=value.int))
    raise TypeError(type(value).__name__)


_PASSED = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def encode_item(row: Row | QuarantineRow) -> bytes:
    """One row of a version-2 message, encoded on its own (see ``encode_batch``): the same
    JSON as ``_row_fields`` gives, in one call into orjson (on the publisher's path for
    every event). Right-sized (``dumps_kept``): a batch's items are kept until its messages
    are built, and orjson's own result would keep a 4 KiB buffer each (a page fault each:
    2 µs an event, half of the encoding)."""
    if len(row) == 4:
        return dumps_kept(_quarantine_fields(row))
    return dumps_kept(row, default=_wire_value, option=_PASSED)


def encode_batch(rows: list[bytes], quarantined: list[bytes]) -> bytes:
    """A version-2 message from rows and quarantine rows encoded by ``encode_item``."""
    return b'{"v":2,"rows":[%s],"quarantine":[%s]}' % (b",".join(rows), b",".join(quarantined))


def compress(body: bytes) -> bytes:
    """A message body as one zstd frame (its size written in the frame's header)."""
    compressor: zstandard.ZstdCompressor | None = getattr(_local, "compressor", None)
    if compressor is None:  # one a thread: a compressor is not safe to share
        compressor = _local.compressor = zstandard.ZstdCompressor(level=_LEVEL)
    return compressor.compress(body)
