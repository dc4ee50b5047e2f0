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

# 2: time windows of a workspace page by (created_at, chain_seq), and relative times (a span
# back from now) are part of the filters; a version 1 cursor cannot say where such a page ended.
_VERSION = 2
_TAG_BYTES = 16


@dataclass(frozen=True)
class Position:
    """Where a page ended, as a key of the query's order: a chain position (kind ``s``), a
    time window's ``(created_at in Unix microseconds, chain position)`` (``c``), or across
    workspaces ``(created_at in Unix microseconds, id)`` (``t``); ``b``: the start."""

    seq: int | None = None
    created_us: int | None = None
    event_id: uuid.UUID | None = None

    @property
    def at_start(self) -> bool:
        return self.seq is None and self.created_us is None

    @property
    def kind(self) -> str:
        if self.at_start:
            return "b"
        if self.created_us is None:
            return "s"
        return "c" if self.seq is not None else "t"

    def as_json(self) -> list[object]:
        kind = self.kind
        if kind == "b":
            return ["b"]
        if kind == "s":
            return ["s", self.seq]
        if kind == "c":
            return ["c", self.created_us, self.seq]
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
        return (
            None if since is None else _integer(since),
            None if until is None else _integer(until),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidCursor("the cursor is malformed") from exc


def _integer(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("not an integer")
    return value


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
            return Position(seq=_integer(seq))
        if kind == "c":
            created, seq = rest
            return Position(created_us=_integer(created), seq=_integer(seq))
        if kind == "t":
            created, event_hex = rest
            return Position(created_us=_integer(created), event_id=uuid.UUID(hex=event_hex))
    except InvalidCursor:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidCursor("the cursor is malformed") from exc
    raise InvalidCursor("the cursor is malformed")
