"""Hash chains: the canonical form of an event, and how events are linked.

The writer seals new events in version 2 of the canonical form (``v2.py``), where every value
that may name a person is committed so that it can be erased; version 1, below, is how events
stored before it were hashed, and they keep verifying.

Every event belongs to the chain of its workspace (events without a workspace share the chain
``NO_WORKSPACE``). It is hashed over its *canonical form*, bytes built once by the writer and
stored next to the event, so nothing is ever re-derived from jsonb (which reorders keys and
rewrites numbers). Version 1 of the canonical form is an orjson array::

    [1, id, workspace_id, action, resource, resource_id, created_at_us,
     user_id_commitment, ip_address_commitment, user_agent_commitment,
     details, previous_value, new_value, sanitised]

- ``created_at_us``: microseconds since the Unix epoch, an integer (PostgreSQL keeps
  microseconds, and text forms such as ``isoformat()`` drop ``.000000``).
- The JSON values are embedded exactly as stored (the writer serialises them with sorted keys,
  so a verifier rebuilding them from jsonb usually gets the same bytes; when it does not, it
  compares their meaning instead).
- Personal values (user id, IP address, user agent) are not hashed themselves: a salted
  commitment ``SHA-256(salt || name || 0x00 || value)`` is. Value and salt are stored in the
  row; erasing both later (GDPR) leaves the chain intact, and a verifier reports the event as
  erased rather than tampered. The salt is random per event, so a commitment cannot be reversed
  by trying every IPv4 address.

Links: ``h(n) = SHA-256(0x00 || h(n-1) || n as 8 bytes || canonical(n))`` with
``h(0) = SHA-256(0x01 || "auditledger/chain/v1" || chain id)``, so a row cannot be moved to
another chain or another position without breaking its hash.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
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
    Row,
)
from .._jsonbytes import dumps_kept
from .v2 import canonical as canonical_v2
from .v2 import fresh_salts

CANONICAL_VERSION = 1
NO_WORKSPACE = uuid.UUID(int=0)
SALT_BYTES = 16

# Stored after the AUDIT_LOG_COLUMNS of every chained row.
CHAIN_COLUMNS: tuple[str, ...] = ("chain_id", "chain_seq", "chain_hash", "canonical", "pii_salt")

# Positions of the canonical array (version 1).
C_VERSION, C_ID, C_WORKSPACE, C_ACTION, C_RESOURCE, C_RESOURCE_ID, C_CREATED = range(7)
C_USER, C_IP, C_UA, C_DETAILS, C_PREVIOUS, C_NEW, C_SANITISED = range(7, 14)
PERSONAL = ((C_USER, "user_id"), (C_IP, "ip_address"), (C_UA, "user_agent"))
JSON_PARTS = (
    (C_DETAILS, "details"),
    (C_PREVIOUS, "previous_value"),
    (C_NEW, "new_value"),
    (C_SANITISED, "sanitised"),
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
PERSONAL_TAGS = {name: name.encode() + b"\x00" for _, name in PERSONAL}
_sha256 = hashlib.sha256
_dumps = orjson.dumps
_loads = orjson.loads
_Fragment = orjson.Fragment
_SORT = orjson.OPT_SORT_KEYS


def chain_of(workspace_id: uuid.UUID | None) -> uuid.UUID:
    return NO_WORKSPACE if workspace_id is None else workspace_id


def commitment(salt: bytes, name: str, value: str) -> str:
    return _sha256(salt + PERSONAL_TAGS[name] + value.encode()).hexdigest()


def micros(value: datetime) -> int:
    return (value - _EPOCH) // _MICROSECOND


def normalise_json(data: bytes | str) -> bytes:
    """JSON with its object keys sorted: the form hashed, and the form jsonb is compared in."""
    return _dumps(_loads(data), option=_SORT)


_TAG_USER, _TAG_IP, _TAG_UA = (PERSONAL_TAGS[name] for _, name in PERSONAL)
_chain_texts: dict[uuid.UUID, str] = {}


def _uuid_text(value: uuid.UUID) -> str:
    """``str(value)`` at two thirds of the cost (on the writer's path for every event)."""
    h = value.int.to_bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _chain_text(chain_id: uuid.UUID) -> str:
    text = _chain_texts.get(chain_id)
    if text is None:
        if len(_chain_texts) > 10_000:
            _chain_texts.clear()
        text = _chain_texts[chain_id] = _uuid_text(chain_id)
    return text


def canonical_form(
    event_id: str,
    workspace: str | None,
    action: Any,
    resource: Any,
    resource_id: Any,
    created_us: int,
    user: str | None,
    ip: str | None,
    ua: str | None,
    details: Any,
    previous: Any,
    new: Any,
    sanitised: Any,
    *,
    dumps: Callable[..., bytes] = dumps_kept,
    option: int | None = None,
) -> bytes:
    """The canonical form (version 1), defined here only: the writer builds it from a prepared
    row (``canonical``) and the verifier rebuilds it from the stored columns with this same
    function. ``user``, ``ip``, ``ua`` are commitments; the JSON parts are embedded as given
    (``orjson.Fragment`` of stored bytes, or parsed values dumped with ``option``)."""
    return dumps(
        (
            CANONICAL_VERSION,
            event_id,
            workspace,
            action,
            resource,
            resource_id,
            created_us,
            user,
            ip,
            ua,
            details,
            previous,
            new,
            sanitised,
        ),
        option=option,
    )


def canonical(row: Row, salt: bytes | None) -> bytes:
    """The canonical bytes of a prepared row (``AUDIT_LOG_COLUMNS`` order, JSON as text)."""
    ws = row[ROW_WORKSPACE]
    user, ip, ua = row[ROW_USER], row[ROW_IP], row[ROW_UA]
    details, previous, new, sanitised = (
        row[ROW_DETAILS],
        row[ROW_PREVIOUS],
        row[ROW_NEW],
        row[ROW_SANITISED],
    )
    # The commitments are commitment() inlined: three calls per event showed in profiles.
    return canonical_form(
        _uuid_text(row[ROW_ID]),
        None if ws is None else _chain_text(ws),
        row[ROW_ACTION],
        row[ROW_RESOURCE],
        row[ROW_RESOURCE_ID],
        micros(row[ROW_CREATED]),
        None
        if user is None or salt is None
        else _sha256(salt + _TAG_USER + user.encode()).hexdigest(),
        None if ip is None or salt is None else _sha256(salt + _TAG_IP + ip.encode()).hexdigest(),
        None if ua is None or salt is None else _sha256(salt + _TAG_UA + ua.encode()).hexdigest(),
        None if details is None else _Fragment(details),
        None if previous is None else _Fragment(previous),
        None if new is None else _Fragment(new),
        None if sanitised is None else _Fragment(sanitised),
    )


Sealed = tuple[uuid.UUID, bytes, bytes | None]  # (chain id, canonical bytes, salt)


def seal(rows: list[Row]) -> list[Sealed]:
    """Canonical form (version 2, see ``v2.py``) and salts of each row: CPU work done before
    any chain lock is taken. (``canonical`` above is version 1, kept for the verifier's sake.)"""
    pool = fresh_salts(len(rows))
    step = len(pool) // len(rows) if rows else 0
    out: list[Sealed] = []
    for i, row in enumerate(rows):
        ws = row[ROW_WORKSPACE]
        data, salt = canonical_v2(
            row,
            pool[i * step : (i + 1) * step],
            None if ws is None else _chain_text(ws),
            _uuid_text(row[ROW_ID]),
            micros(row[ROW_CREATED]),
        )
        out.append((chain_of(ws), data, salt or None))
    return out
