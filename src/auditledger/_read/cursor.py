"""Opaque page cursors: the position of the last event shown, bound to the query's filters.

A cursor is ``base64url(payload) "." base64url(tag)``. The payload is JSON holding a version,
the fingerprint of the filters (workspace and direction included) and the position; the tag
is an HMAC-SHA256 of the payload with the database's read key, so a cursor edited by hand, or
used with other filters or another workspace, is refused instead of quietly reading another
slice of the log (Retraced's cursors are plain ``base64("time,id")``; ours are not).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import uuid
from dataclasses import dataclass
from hashlib import sha256

import orjson

from .._errors import InvalidCursor

_VERSION = 1
_TAG_BYTES = 16


@dataclass(frozen=True)
class Position:
    """Where a page ended: a chain position (queries of one workspace) or, across
    workspaces, ``(created_at in Unix microseconds, id)``."""

    seq: int | None = None
    created_us: int | None = None
    event_id: uuid.UUID | None = None

    @property
    def at_start(self) -> bool:
        return self.seq is None and self.created_us is None

    def as_json(self) -> list[object]:
        if self.at_start:
            return ["b"]
        if self.seq is not None:
            return ["s", self.seq]
        return ["t", self.created_us, None if self.event_id is None else self.event_id.hex]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


Times = tuple[int | None, int | None]


def encode(key: bytes, fingerprint: str, position: Position, times: Times = (None, None)) -> str:
    """``times``: the query's since and until (Unix microseconds), carried so that a command
    line given ``--since 2h`` again can page on with the times of its first page."""
    data = {"v": _VERSION, "f": fingerprint, "p": position.as_json(), "t": list(times)}
    payload = orjson.dumps(data)
    tag = hmac.new(key, payload, sha256).digest()[:_TAG_BYTES]
    return f"{_b64(payload)}.{_b64(tag)}"


def _authentic(key: bytes, cursor: str) -> bytes:
    if not isinstance(cursor, str) or cursor.count(".") != 1 or len(cursor) > 512:
        raise InvalidCursor("the cursor is malformed")
    head, _, tail = cursor.partition(".")
    try:
        payload, tag = _unb64(head), _unb64(tail)
    except (binascii.Error, ValueError) as exc:
        raise InvalidCursor("the cursor is malformed") from exc
    expected = hmac.new(key, payload, sha256).digest()[:_TAG_BYTES]
    if not hmac.compare_digest(tag, expected):
        raise InvalidCursor("the cursor was not issued by this database, or it was edited")
    return payload


def issued_times(key: bytes, cursor: str) -> Times:
    """The since and until of the query that issued ``cursor`` (after checking its tag)."""
    try:
        since, until = orjson.loads(_authentic(key, cursor))["t"]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidCursor("the cursor is malformed") from exc
    return since, until


def decode(key: bytes, fingerprint: str, cursor: str) -> Position:
    """The position in ``cursor``; raises InvalidCursor saying why it cannot be used."""
    payload = _authentic(key, cursor)
    try:
        data = orjson.loads(payload)
        if data["v"] != _VERSION:
            raise InvalidCursor("the cursor is of another version")
        if data["f"] != fingerprint:
            raise InvalidCursor(
                "the cursor belongs to other filters or another workspace: start without it"
            )
        kind, *rest = data["p"]
        if kind == "b" and not rest:
            return Position()
        if kind == "s":
            (seq,) = rest
            if not isinstance(seq, int) or isinstance(seq, bool):
                raise TypeError("seq")
            return Position(seq=seq)
        if kind == "t":
            created, event_hex = rest
            if not isinstance(created, int) or isinstance(created, bool):
                raise TypeError("created_at")
            return Position(created_us=created, event_id=uuid.UUID(hex=event_hex))
    except InvalidCursor:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidCursor("the cursor is malformed") from exc
    raise InvalidCursor("the cursor is malformed")
