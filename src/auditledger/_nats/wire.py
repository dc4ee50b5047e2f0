"""The body of a stream message: one prepared event, or one quarantine row.

Events are published after preparation (validated, sanitised, redacted), so the stream holds
nothing the database would not. The workspace is left as the caller gave it (an id or a
``WorkspaceRef``): the ingester resolves it inside the transaction that stores the event.
Times travel as whole microseconds, exactly as PostgreSQL stores them.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

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

VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ROW_LENGTH = ROW_SANITISED + 1
_JSON = (ROW_DETAILS, ROW_PREVIOUS, ROW_NEW, ROW_SANITISED)  # JSON text, stored as jsonb
_TEXT_INDEXES = (ROW_USER, ROW_IP, ROW_UA, ROW_ACTION, ROW_RESOURCE, ROW_RESOURCE_ID, *_JSON)


class WireError(ValueError):
    """A message that is not an event of ours: the ingester quarantines it."""


def _micros(value: datetime) -> int:
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _from_micros(value: object) -> datetime:
    if type(value) is not int:
        raise WireError("created_at is not a whole number")
    return _EPOCH + timedelta(microseconds=value)


def encode_row(row: Row) -> bytes:
    fields: list[Any] = list(row)
    fields[ROW_ID] = str(row[ROW_ID])
    ws = row[ROW_WORKSPACE]
    if isinstance(ws, WorkspaceRef):
        fields[ROW_WORKSPACE] = {"ref": [ws.team_id, ws.enterprise_id, ws.name, ws.is_active]}
    elif ws is not None:
        fields[ROW_WORKSPACE] = str(ws)
    fields[ROW_CREATED] = _micros(row[ROW_CREATED])
    return orjson.dumps({"v": VERSION, "row": fields})


def encode_quarantine(row: QuarantineRow) -> bytes:
    event_id, reason, payload, created_at = row
    return orjson.dumps(
        {"v": VERSION, "quarantine": [str(event_id), reason, payload.decode(), _micros(created_at)]}
    )


def decode(data: bytes) -> Row | QuarantineRow:
    """A row (13 fields) or a quarantine row (4 fields); raises WireError."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise WireError("not JSON") from exc
    if not isinstance(body, dict) or body.get("v") != VERSION:
        raise WireError("unknown message version")
    if "row" in body:
        return _decode_row(body["row"])
    if "quarantine" in body:
        return _decode_quarantine(body["quarantine"])
    raise WireError("neither an event nor a quarantine row")


def _decode_row(fields: object) -> Row:
    if not isinstance(fields, list) or len(fields) != _ROW_LENGTH:
        raise WireError("an event with the wrong number of fields")
    for index in _TEXT_INDEXES:
        if fields[index] is not None and type(fields[index]) is not str:
            raise WireError("a text field that is not text")
    if type(fields[ROW_ACTION]) is not str:
        raise WireError("an event without an action")
    for index in _JSON:
        if fields[index] is not None:
            _require_json(fields[index])
    fields[ROW_ID] = _uuid(fields[ROW_ID])
    fields[ROW_WORKSPACE] = _workspace(fields[ROW_WORKSPACE])
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


def poison_row(data: bytes, msg_id: str | None, reason: str) -> QuarantineRow:
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
    # Not the body itself: it was not prepared by auditledger, so it was never redacted.
    payload = {
        "source": "nats",
        "message_id": msg_id,
        "body_sha256": hashlib.sha256(data).hexdigest(),
        "body_bytes": len(data),
    }
    return (event_id, f"unreadable stream message ({reason})", orjson.dumps(payload), now_utc())


def now_utc() -> datetime:
    return datetime.now(UTC)
