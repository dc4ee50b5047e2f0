"""Version 2 of the canonical form: every value that may name a person is committed, not hashed.

Version 1 (see ``_chain.py``) hashed ``resource_id`` and the JSON values in clear, so a person
named there could never be erased without breaking the chain. Version 2 is an orjson array::

    [2, id, workspace_id, action, resource, created_at_us,
     user_id, ip_address, user_agent, resource_id,
     details, previous_value, new_value, sanitised]

where each of the last eight is ``null`` (no value) or the hex commitment
``SHA-256(salt || name || 0x00 || value)``, ``value`` being the text as stored (JSON values in
their sorted-key orjson form, which the writer already produces). Each present value has its
own random 16-byte salt (128 bits, as SD-JWT asks); the salts are stored in ``pii_salt``, one
after the other in the order above, for the present values only.

Erasing a value sets its column to NULL and its salt to 16 zero bytes. The commitment stays in
the canonical bytes, so every link still verifies; without the salt it cannot be tested against
guesses (trying every IPv4 address or every Slack user id means trying 2^128 salts each), and
the verifier knows the value was removed on purpose, which a ``gdpr.erasure`` event must cover.
The canonical bytes themselves name nobody.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import Any

import orjson

from .._jsonbytes import dumps_kept

VERSION = 2
SALT_BYTES = 16
ERASED_SALT = bytes(SALT_BYTES)

# (name, position in the canonical array, position in a prepared row (AUDIT_LOG_COLUMNS))
ERASABLE: tuple[tuple[str, int, int], ...] = (
    ("user_id", 6, 1),
    ("ip_address", 7, 3),
    ("user_agent", 8, 4),
    ("resource_id", 9, 7),
    ("details", 10, 8),
    ("previous_value", 11, 9),
    ("new_value", 12, 10),
    ("sanitised", 13, 12),
)
JSON_NAMES = frozenset({"details", "previous_value", "new_value", "sanitised"})
LENGTH = 14
C_ID, C_WORKSPACE, C_ACTION, C_RESOURCE, C_CREATED = 1, 2, 3, 4, 5
TAGS = {name: name.encode() + b"\x00" for name, _, _ in ERASABLE}
_ROW_TAGS = tuple((index, TAGS[name]) for name, _, index in ERASABLE)

_sha256 = hashlib.sha256


def commit(salt: bytes, name: str, value: str) -> str:
    return _sha256(salt + TAGS[name] + value.encode()).hexdigest()


def canonical(
    row: tuple[Any, ...], salts: bytes, chain_text: str | None, id_text: str, created_us: int
) -> tuple[bytes, bytes]:
    """Canonical bytes of a prepared row, and the salts used (a slice of ``salts``, which must
    hold 16 bytes for every erasable field)."""
    out: list[Any] = [VERSION, id_text, chain_text, row[5], row[6], created_us]
    used = 0
    for index, tag in _ROW_TAGS:
        value = row[index]
        if value is None:
            out.append(None)
            continue
        salt = salts[used : used + SALT_BYTES]
        used += SALT_BYTES
        out.append(_sha256(salt + tag + value.encode()).hexdigest())
    return dumps_kept(out), salts[:used]


def fresh_salts(rows: int) -> bytes:
    """Randomness for ``rows`` events, drawn in one system call."""
    return os.urandom(SALT_BYTES * len(ERASABLE) * rows)


def slots(hashed: list[Any], salt: bytes | None) -> dict[str, bytes | None]:
    """Each committed field's salt (None past the stored salts: cut short or missing)."""
    out: dict[str, bytes | None] = {}
    offset = 0
    for name, position, _ in ERASABLE:
        if hashed[position] is None:
            continue
        piece = None if salt is None else salt[offset : offset + SALT_BYTES]
        out[name] = piece if piece is not None and len(piece) == SALT_BYTES else None
        offset += SALT_BYTES
    return out


def erased_salt(hashed: list[Any], salt: bytes, erase: frozenset[str]) -> bytes:
    """``salt`` with the slots of the fields in ``erase`` zeroed."""
    out = bytearray(salt)
    offset = 0
    for name, position, _ in ERASABLE:
        if hashed[position] is None:
            continue
        if name in erase:
            out[offset : offset + SALT_BYTES] = ERASED_SALT
        offset += SALT_BYTES
    return bytes(out)


def parse(data: bytes) -> list[Any] | None:
    """The hashed array of a version 2 form, or None when ``data`` is not one."""
    try:
        hashed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(hashed, list) or len(hashed) != LENGTH or hashed[0] != VERSION:
        return None
    return hashed


def is_v2(data: bytes | None) -> bool:
    return data is not None and data[:3] == b"[2,"


def uuid_text(value: uuid.UUID) -> str:
    h = value.int.to_bytes(16).hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
