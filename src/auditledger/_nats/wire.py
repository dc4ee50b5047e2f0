"""The body of a stream message: many prepared events and quarantine rows (version 2), or
one of either (version 1, still read: a stream may hold messages of publishers not yet
upgraded when the ingesters are).

Events are published after preparation (validated, sanitised, redacted), so the stream holds
nothing the database would not. The workspace is left as the caller gave it (an id or a
``WorkspaceRef``): the ingester resolves it inside the transaction that stores the event.
Times travel as whole microseconds, exactly as PostgreSQL stores them.

Version 2 is ``{"v": 2, "rows": [row, ...], "quarantine": [row, ...]}``, each row a list in the
version-1 layout. Rows are encoded one by one (``encode_item``) so that the publisher can cut
messages at a size without encoding twice, and decoded one by one so that one bad event in a
message is quarantined alone while the good ones around it are stored.

On the stream a body may be compressed: one zstd frame, said by the header
``Content-Encoding: zstd`` (``compress`` and ``stream_body``). Events of one partition repeat
most of their bytes (keys, user agents, workspace ids), and nats-server's work grows with the
bytes it stores and delivers. A body never decompresses to more than ``MAX_BODY``, what the
server would take uncompressed, so a hand-made message cannot make an ingester allocate more.
"""

from __future__ import annotations

import hashlib
import operator
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from .._errors import MissingExtraError

try:
    import zstandard
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("nats", "zstandard") from exc

from .._db.rows import (
    ROW_ACTION,
    ROW_CREATED,
    ROW_DETAILS,
    ROW_ID,
    ROW_IP,
    ROW_NEW,
    ROW_PREVIOUS,
    ROW_RESOURCE,
    ROW_RESOURCE_ID,
    ROW_SANITISED,
    ROW_UA,
    ROW_USER,
    ROW_WORKSPACE,
    QuarantineRow,
    Row,
)
from .._events import WorkspaceRef

VERSION = 2
ENCODING_HEADER = "Content-Encoding"
ZSTD = "zstd"
MAX_BODY = 1024 * 1024  # nats-server's default max_payload: the most a body could be plain
_LEVEL = 1  # the fastest level: 5% of the bytes on the bench's events, 0.5 µs an event
_V1 = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ROW_LENGTH = ROW_SANITISED + 1
_JSON = (ROW_DETAILS, ROW_PREVIOUS, ROW_NEW, ROW_SANITISED)  # JSON text, stored as jsonb
_TEXT_INDEXES = (ROW_USER, ROW_IP, ROW_UA, ROW_ACTION, ROW_RESOURCE, ROW_RESOURCE_ID, *_JSON)
# Checked for every event an ingester reads: the fields taken out in one call each.
_texts = operator.itemgetter(*_TEXT_INDEXES)
_TEXT_TYPES = frozenset({str, type(None)})
_loads, _dumps, _SORT_KEYS = orjson.loads, orjson.dumps, orjson.OPT_SORT_KEYS


class WireError(ValueError):
    """A message that is not an event of ours: the ingester quarantines it."""


class RefusedAction(WireError):
    """An event naming an action only the library's direct paths write: quarantined as
    refused, not as unreadable."""


# What ``auditledger verify`` relies on (a gdpr.erasure event accepts removed values) or what
# only the owner's commands write: never from the stream, where a hand-made message would
# skip the publisher's reserved-namespace check. ``audit_log.*`` (records of reads) may come
# through a NATS logger handed to the viewer, and prove nothing.
_DIRECT_ONLY = ("gdpr.", "retention.")


def _micros(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(value: object) -> datetime:
    if type(value) is not int:
        raise WireError("created_at is not a whole number")
    return _EPOCH + timedelta(microseconds=value)


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
    return orjson.dumps({"v": _V1, "row": _row_fields(row)})


def encode_quarantine(row: QuarantineRow) -> bytes:
    """A version-1 message: one quarantine row."""
    return orjson.dumps({"v": _V1, "quarantine": _quarantine_fields(row)})


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
    every event)."""
    if len(row) == 4:
        return orjson.dumps(_quarantine_fields(row))
    return orjson.dumps(row, default=_wire_value, option=_PASSED)


def encode_batch(rows: list[bytes], quarantined: list[bytes]) -> bytes:
    """A version-2 message from rows and quarantine rows encoded by ``encode_item``."""
    return b'{"v":2,"rows":[%s],"quarantine":[%s]}' % (b",".join(rows), b",".join(quarantined))


def compress(body: bytes) -> bytes:
    """A message body as one zstd frame (its size written in the frame's header)."""
    return zstandard.compress(body, _LEVEL)


def stream_body(data: bytes, encoding: str | None) -> bytes:
    """The plain body of a stream message whose ``Content-Encoding`` header is ``encoding``;
    raises WireError (the message is then quarantined as unreadable)."""
    if encoding is None:
        return data
    if encoding != ZSTD:
        raise WireError("an unknown content encoding")
    try:
        # A frame may declare any size, and the decompressor trusts it over max_output_size:
        # the declared size is checked first; an undeclared one is bounded by max_output_size.
        declared = zstandard.frame_content_size(data)
        if declared > MAX_BODY:
            raise WireError("a body that would decompress beyond 1 MiB")
        body: bytes = zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_BODY)
    except zstandard.ZstdError as exc:
        raise WireError("a compressed body that cannot be decompressed") from exc
    return body


def decode_stream_message(
    data: bytes, headers: dict[str, str] | None
) -> tuple[list[Row], list[QuarantineRow], int]:
    """``decode_message`` for a message as fetched: its id and content encoding from its
    headers. Never raises."""
    msg_id = headers.get("Nats-Msg-Id") if headers else None
    try:
        body = stream_body(data, headers.get(ENCODING_HEADER) if headers else None)
    except WireError as exc:
        return [], [poison_row(data, msg_id, str(exc))], 1
    return decode_message(body, msg_id)


def decode(data: bytes) -> Row | QuarantineRow:
    """A version-1 message: a row (13 fields) or a quarantine row (4 fields); raises
    WireError."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise WireError("not JSON") from exc
    return _decode_v1(body)


def _decode_v1(body: object) -> Row | QuarantineRow:
    if not isinstance(body, dict) or body.get("v") != _V1:
        raise WireError("unknown message version")
    if "row" in body:
        return _decode_row(body["row"])
    if "quarantine" in body:
        return _decode_quarantine(body["quarantine"])
    raise WireError("neither an event nor a quarantine row")


def decode_message(data: bytes, msg_id: str | None) -> tuple[list[Row], list[QuarantineRow], int]:
    """Every event of a message of either version: (rows, quarantine rows, unreadable).

    Never raises. What cannot be read becomes a quarantine row (``poison_row``), counted in
    the third value: a message that is not ours at all is one row; in a version-2 message,
    each bad event is one, and the events around it are kept.
    """
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return [], [poison_row(data, msg_id, "not JSON")], 1
    if isinstance(body, dict) and body.get("v") == VERSION:
        rows_in, kept_in = body.get("rows"), body.get("quarantine")
        if isinstance(rows_in, list) and isinstance(kept_in, list) and (rows_in or kept_in):
            return _decode_items(rows_in, kept_in, msg_id)
        return [], [poison_row(data, msg_id, "a version-2 message without events")], 1
    try:
        item = _decode_v1(body)
    except WireError as exc:
        refused = isinstance(exc, RefusedAction)
        return [], [poison_row(data, msg_id, str(exc), refused=refused)], 1
    if len(item) == 4:
        return [], [item], 0
    return [item], [], 0


def _decode_items(
    rows_in: list[Any], kept_in: list[Any], msg_id: str | None
) -> tuple[list[Row], list[QuarantineRow], int]:
    rows: list[Row] = []
    quarantined: list[QuarantineRow] = []
    bad = 0
    workspaces: dict[str, uuid.UUID] = {}  # a message names few workspaces: parse each once
    for index, fields in enumerate(rows_in):
        try:
            rows.append(_decode_row(fields, workspaces))
        except RefusedAction as exc:
            quarantined.append(_poison_item(fields, msg_id, index, str(exc), refused=True))
            bad += 1
        except WireError as exc:
            quarantined.append(_poison_item(fields, msg_id, index, str(exc)))
            bad += 1
    for index, fields in enumerate(kept_in, start=len(rows_in)):
        try:
            quarantined.append(_decode_quarantine(fields))
        except WireError as exc:
            quarantined.append(_poison_item(fields, msg_id, index, str(exc)))
            bad += 1
    return rows, quarantined, bad


def _poison_item(
    fields: object, msg_id: str | None, index: int, reason: str, *, refused: bool = False
) -> QuarantineRow:
    """One unreadable event of a version-2 message. Its own id when it carries a readable
    one, else one derived from the message's id and its place in it: stable either way, so a
    redelivery is de-duplicated."""
    try:
        data = orjson.dumps(fields)
    except TypeError:
        data = repr(fields).encode()
    own = fields[ROW_ID] if isinstance(fields, list) and fields else None
    try:
        event_id = str(own if isinstance(own, uuid.UUID) else uuid.UUID(own))
    except (TypeError, ValueError, AttributeError):
        event_id = None
    return poison_row(data, event_id or f"{msg_id}#{index}", reason, refused=refused)


def _decode_row(fields: object, workspaces: dict[str, uuid.UUID] | None = None) -> Row:
    if type(fields) is not list or len(fields) != _ROW_LENGTH:
        raise WireError("an event with the wrong number of fields")
    if not _TEXT_TYPES.issuperset(map(type, _texts(fields))):
        raise WireError("a text field that is not text")
    action = fields[ROW_ACTION]
    if action is None:
        raise WireError("an event without an action")
    if action.startswith(_DIRECT_ONLY):
        raise RefusedAction(f"action {action.split('.', 1)[0]}.* is written by auditledger only")
    try:
        for index in _JSON:
            text = fields[index]
            if text is not None:
                # In the one spelling the canonical form commits to and `verify` rebuilds
                # from jsonb (sorted keys, no spaces): what publishers send. A hand-made
                # message may spell the same value otherwise; stored as sent, it would
                # verify as tampered.
                spelt = _dumps(_loads(text), option=_SORT_KEYS)
                if spelt != text.encode():
                    fields[index] = spelt.decode()
    except (orjson.JSONDecodeError, orjson.JSONEncodeError) as exc:
        raise WireError("a JSON field that is not JSON") from exc
    fields[ROW_ID] = _uuid(fields[ROW_ID])
    ws = fields[ROW_WORKSPACE]
    if workspaces is not None and type(ws) is str:
        found = workspaces.get(ws)
        if found is None:
            found = workspaces[ws] = _uuid(ws)
        fields[ROW_WORKSPACE] = found
    else:
        fields[ROW_WORKSPACE] = _workspace(ws)
    fields[ROW_CREATED] = _from_micros(fields[ROW_CREATED])
    return tuple(fields)


def _decode_quarantine(fields: object) -> QuarantineRow:
    if not isinstance(fields, list) or len(fields) != 4:
        raise WireError("a quarantine row with the wrong number of fields")
    event_id, reason, payload, created = fields
    if type(reason) is not str or type(payload) is not str:
        raise WireError("a quarantine row with a field of the wrong type")
    _require_json(payload)
    return (_uuid(event_id), reason, payload.encode(), _from_micros(created))


def _require_json(text: str) -> None:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise WireError("a JSON field that is not JSON") from exc


def _uuid(value: object) -> uuid.UUID:
    if type(value) is not str:
        raise WireError("an id that is not text")
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise WireError("an id that is not a UUID") from exc


def _workspace(value: object) -> uuid.UUID | WorkspaceRef | None:
    if value is None:
        return None
    if isinstance(value, str):
        return _uuid(value)
    if isinstance(value, dict) and isinstance(ref := value.get("ref"), list) and len(ref) == 4:
        team, enterprise, name, active = ref
        texts = all(v is None or type(v) is str for v in (team, enterprise, name))
        if texts and (active is None or type(active) is bool) and (team or enterprise):
            return WorkspaceRef(team, enterprise, name, active)
    raise WireError("a workspace that is neither an id nor a reference")


def poison_row(
    data: bytes, msg_id: str | None, reason: str, *, refused: bool = False
) -> QuarantineRow:
    """A message the ingester cannot read, as a quarantine row: accounted for, not dropped.

    Its id is the message's Nats-Msg-Id when that is a UUID, else derived from the content:
    a redelivery of the same message is then de-duplicated like any event.
    """
    try:
        event_id = uuid.UUID(msg_id) if msg_id else None
    except ValueError:
        event_id = None
    if event_id is None:
        digest = hashlib.sha256((msg_id or "").encode() + b"\0" + data).digest()
        event_id = uuid.UUID(bytes=digest[:16], version=4)
    what = "refused" if refused else "unreadable"
    return digest_row(data, event_id, msg_id, f"{what} stream message ({reason})")


def digest_row(data: bytes, event_id: uuid.UUID, msg_id: str | None, reason: str) -> QuarantineRow:
    """A quarantine row holding a digest of ``data``, not ``data``: what was not prepared by
    auditledger was never redacted."""
    payload = {
        "source": "nats",
        "message_id": msg_id,
        "body_sha256": hashlib.sha256(data).hexdigest(),
        "body_bytes": len(data),
    }
    return (event_id, reason, orjson.dumps(payload), now_utc())


def now_utc() -> datetime:
    return datetime.now(UTC)
