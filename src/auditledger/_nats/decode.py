"""What an ingester reads: stream messages (see ``wire`` for the format) back into prepared
rows and quarantine rows.

Nothing here trusts a message: it may be hand-made. Every field is checked for its type,
every id parsed, every JSON value checked to be JSON in the publishers' spelling (unless the
message is signed with a publisher key, see ``auth``), and what fails becomes a quarantine
row with a reason (never an exception into the ingester, never a silent drop). This runs
for every event an ingester stores, so the common case (a message as publishers write it)
takes the short road: ids parsed without ``uuid.UUID``'s generality, and the JSON values of
a whole message checked in one parse (``_spelt_as_published``).
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from .._errors import MissingExtraError

try:
    import zstandard
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("nats", "zstandard") from exc

from .._db.rows import (
    ROW_DETAILS,
    ROW_ID,
    ROW_NEW,
    ROW_PREVIOUS,
    ROW_SANITISED,
    QuarantineRow,
    Row,
)
from .._events import WorkspaceRef
from .auth import MAC_HEADER, refusal
from .wire import (
    DIRECT_ONLY,
    ENCODING_HEADER,
    EPOCH,
    MAX_BODY,
    VERSION,
    VERSION_1,
    ZSTD,
    RefusedAction,
    WireError,
)

REFUSED = "refused stream message"  # a quarantine reason's start: not stored on purpose
_ROW_LENGTH = ROW_SANITISED + 1
_JSON = (ROW_DETAILS, ROW_PREVIOUS, ROW_NEW, ROW_SANITISED)  # JSON text, stored as jsonb
_TEXT = (str, type(None))
_loads, _dumps, _SORT_KEYS = orjson.loads, orjson.dumps, orjson.OPT_SORT_KEYS
_JSON_ERRORS = (orjson.JSONDecodeError, orjson.JSONEncodeError)
_new, _set, _UNKNOWN = object.__new__, object.__setattr__, uuid.SafeUUID.unknown
_local = threading.local()  # a decompressor each thread: one is not safe to share


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
        body: bytes = _decompressor().decompress(data, max_output_size=MAX_BODY)
    except zstandard.ZstdError as exc:
        raise WireError("a compressed body that cannot be decompressed") from exc
    return body


def _decompressor() -> zstandard.ZstdDecompressor:
    found: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if found is None:
        found = _local.decompressor = zstandard.ZstdDecompressor()
    return found


def decode_stream_message(
    data: bytes,
    headers: dict[str, str] | None,
    subject: str = "",
    keys: Mapping[str, bytes] | None = None,
) -> tuple[list[Row], list[QuarantineRow], int]:
    """``decode_message`` for a message as fetched: its id and content encoding from its
    headers. With ``keys`` (see ``auth``), a message not signed with one of them is refused;
    a signed one is trusted for its JSON spelling. Never raises."""
    msg_id = headers.get("Nats-Msg-Id") if headers else None
    encoding = headers.get(ENCODING_HEADER) if headers else None
    if keys:
        mac = headers.get(MAC_HEADER) if headers else None
        reason = refusal(keys, mac, subject, msg_id, encoding, data)
        if reason is not None:
            return [], [poison_row(data, msg_id, reason, refused=True)], 1
    try:
        body = stream_body(data, encoding)
    except WireError as exc:
        return [], [poison_row(data, msg_id, str(exc))], 1
    return decode_message(body, msg_id, trusted=bool(keys))


def decode(data: bytes) -> Row | QuarantineRow:
    """A version-1 message: a row (13 fields) or a quarantine row (4 fields); raises
    WireError."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise WireError("not JSON") from exc
    return _decode_v1(body)


def _decode_v1(body: object) -> Row | QuarantineRow:
    if not isinstance(body, dict) or body.get("v") != VERSION_1:
        raise WireError("unknown message version")
    if "row" in body:
        return _spelt(_decode_row(body["row"], {}, None))
    if "quarantine" in body:
        return _decode_quarantine(body["quarantine"])
    raise WireError("neither an event nor a quarantine row")


def decode_message(
    data: bytes, msg_id: str | None, *, trusted: bool = False
) -> tuple[list[Row], list[QuarantineRow], int]:
    """Every event of a message of either version: (rows, quarantine rows, unreadable).

    Never raises. What cannot be read becomes a quarantine row (``poison_row``), counted in
    the third value: a message that is not ours at all is one row; in a version-2 message,
    each bad event is one, and the events around it are kept. ``trusted``: signed by a
    publisher (``auth``), so its JSON values are in the publishers' spelling, as the direct
    writer's are, and are not checked again; every other check still runs.
    """
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return [], [poison_row(data, msg_id, "not JSON")], 1
    if isinstance(body, dict) and body.get("v") == VERSION:
        rows_in, kept_in = body.get("rows"), body.get("quarantine")
        if isinstance(rows_in, list) and isinstance(kept_in, list) and (rows_in or kept_in):
            return _decode_items(rows_in, kept_in, msg_id, trusted)
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
    rows_in: list[Any], kept_in: list[Any], msg_id: str | None, trusted: bool
) -> tuple[list[Row], list[QuarantineRow], int]:
    rows: list[Row] = []
    read: list[tuple[int, Any]] = []  # (place in the message, fields) of each row in rows
    bad_rows: list[tuple[int, QuarantineRow]] = []
    workspaces: dict[str, uuid.UUID] = {}  # a message names few workspaces: parse each once
    # The JSON texts to check in one parse; none to collect when a publisher signed them.
    texts: list[str] | None = None if trusted else []
    for index, fields in enumerate(rows_in):
        try:
            rows.append(_decode_row(fields, workspaces, texts))
            read.append((index, fields))
        except RefusedAction as exc:
            bad_rows.append((index, _poison_item(fields, msg_id, index, str(exc), refused=True)))
        except WireError as exc:
            bad_rows.append((index, _poison_item(fields, msg_id, index, str(exc))))
    if texts and not _spelt_as_published(texts):
        rows, respelt_bad = _respelt(rows, read, msg_id)
        bad_rows = sorted(bad_rows + respelt_bad, key=lambda pair: pair[0])  # message order
    quarantined = [q for _, q in bad_rows]
    bad = len(bad_rows)
    for index, fields in enumerate(kept_in, start=len(rows_in)):
        try:
            quarantined.append(_decode_quarantine(fields))
        except WireError as exc:
            quarantined.append(_poison_item(fields, msg_id, index, str(exc)))
            bad += 1
    return rows, quarantined, bad


def _spelt_as_published(texts: list[str]) -> bool:
    """Whether every text is JSON in the one spelling the canonical form commits to and
    `verify` rebuilds from jsonb (sorted keys, no spaces): what publishers send.

    One parse and one print for all of them: joined as the items of a JSON array, the texts
    are all in that spelling when the array parses to as many values and prints back to the
    texts joined by commas, byte for byte. The texts are parsed joined by a newline and a
    comma: JSON allows no raw newline inside a string, so no string can begin in one text and
    end in another (the `"x` ... `y"` a hand-made message could wrap around a text spelt
    otherwise). Texts that are JSON only together (``[1`` and ``2]``) can still pass, each
    made of well-spelt pieces; PostgreSQL refuses every one of them, so their rows are
    quarantined when stored.
    """
    try:
        values = _loads("[" + "\n,".join(texts) + "]")
        if len(values) != len(texts):
            return False
        return _dumps(values, option=_SORT_KEYS) == ("[" + ",".join(texts) + "]").encode()
    except _JSON_ERRORS:
        return False


def _respelt(
    rows: list[Row], read: list[tuple[int, Any]], msg_id: str | None
) -> tuple[list[Row], list[tuple[int, QuarantineRow]]]:
    """The rows with each JSON value in the publishers' spelling; a row with a value that is
    not JSON, quarantined (with its place in the message)."""
    kept: list[Row] = []
    quarantined: list[tuple[int, QuarantineRow]] = []
    for row, (index, fields) in zip(rows, read, strict=True):
        try:
            kept.append(_spelt(row))
        except WireError as exc:
            quarantined.append((index, _poison_item(fields, msg_id, index, str(exc))))
    return kept, quarantined


def _spelt(row: Row) -> Row:
    """``row`` with its JSON values in the publishers' spelling; raises WireError. A
    hand-made message may spell a value otherwise; stored as sent, it would verify as
    tampered."""
    out = list(row)
    try:
        for index in _JSON:
            text = out[index]
            if text is not None:
                spelt = _dumps(_loads(text), option=_SORT_KEYS)
                if spelt != text.encode():
                    out[index] = spelt.decode()
    except _JSON_ERRORS as exc:
        raise WireError("a JSON field that is not JSON") from exc
    return tuple(out)


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
        event_id = str(uuid.UUID(own))
    except (TypeError, ValueError, AttributeError):
        event_id = None
    return poison_row(data, event_id or f"{msg_id}#{index}", reason, refused=refused)


def _decode_row(fields: object, workspaces: dict[str, uuid.UUID], texts: list[str] | None) -> Row:
    """One event's fields as a row, its JSON values as sent (appended to ``texts``, to be
    checked for the whole message at once; ``None``: the caller checks them, or the message
    is signed). Raises WireError."""
    if type(fields) is not list or len(fields) != _ROW_LENGTH:
        raise WireError("an event with the wrong number of fields")
    # In AUDIT_LOG_COLUMNS order (``ROW_*``), which the wire keeps.
    eid, user, ws, ip, ua, action, resource, rid, details, prev, new, created, sanitised = fields
    if not (
        type(user) in _TEXT
        and type(ip) in _TEXT
        and type(ua) in _TEXT
        and type(action) in _TEXT
        and type(resource) in _TEXT
        and type(rid) in _TEXT
        and type(details) in _TEXT
        and type(prev) in _TEXT
        and type(new) in _TEXT
        and type(sanitised) in _TEXT
    ):
        raise WireError("a text field that is not text")
    if action is None:
        raise WireError("an event without an action")
    if action.startswith(DIRECT_ONLY):
        raise RefusedAction(f"action {action.split('.', 1)[0]}.* is written by auditledger only")
    if type(ws) is str:
        workspace: uuid.UUID | WorkspaceRef | None = workspaces.get(ws)
        if workspace is None:
            workspace = workspaces[ws] = _uuid(ws)
    else:
        workspace = _workspace(ws)
    row = (_uuid(eid), user, workspace, ip, ua, action, resource, rid, details, prev, new,
           _time(created), sanitised)  # fmt: skip
    if texts is not None:  # only a row read whole: a bad row's texts take no part
        for text in (details, prev, new, sanitised):
            if text is not None:
                texts.append(text)
    return row


def _decode_quarantine(fields: object) -> QuarantineRow:
    if not isinstance(fields, list) or len(fields) != 4:
        raise WireError("a quarantine row with the wrong number of fields")
    event_id, reason, payload, created = fields
    if type(reason) is not str or type(payload) is not str:
        raise WireError("a quarantine row with a field of the wrong type")
    try:
        orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise WireError("a JSON field that is not JSON") from exc
    return (_uuid(event_id), reason, payload.encode(), _time(created))


def _time(micros: object) -> datetime:
    """``created_at`` from whole microseconds since 1970 (UTC)."""
    if type(micros) is not int:
        raise WireError("created_at is not a whole number")
    try:
        return EPOCH + timedelta(0, 0, micros)
    except OverflowError as exc:  # beyond the years 1-9999 a datetime can hold
        raise WireError("created_at out of range") from exc


def _uuid(value: object) -> uuid.UUID:
    """``uuid.UUID(value)`` for text, at half the cost for the 36 characters publishers
    write (the same rule as ``uuid.UUID``: 32 hex digits once the dashes are gone)."""
    if type(value) is not str:
        raise WireError("an id that is not text")
    digits = value.replace("-", "")
    try:
        if len(digits) == 32:  # no sign is left: int() cannot go below 0 or past 2**128
            parsed: uuid.UUID = _new(uuid.UUID)
            _set(parsed, "int", int(digits, 16))
            _set(parsed, "is_safe", _UNKNOWN)
            return parsed
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
    what = REFUSED if refused else "unreadable stream message"
    return digest_row(data, event_id, msg_id, f"{what} ({reason})")


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
