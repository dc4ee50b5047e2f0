"""Checking an event stored in version 2 of the canonical form (see ``_chain_v2.py``).

Each present value is tested against its commitment with its own salt. A value removed from
the row (NULL) whose commitment stays is an erasure: counted, and kept aside so that the
verifier can check afterwards that a ``gdpr.erasure`` event covers it; an erasure no such event
covers is tampering.
"""

from __future__ import annotations

import hashlib
import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import orjson

from ..._chain.v2 import (
    C_ACTION,
    C_CREATED,
    C_ID,
    C_RESOURCE,
    C_WORKSPACE,
    ERASABLE,
    ERASED_SALT,
    JSON_NAMES,
    SALT_BYTES,
    TAGS,
    VERSION,
    parse,
    slots,
)

# Row positions as the verifier reads them (see _verify._Row): the erasable values sit at the
# same positions as in a prepared row.
R_ID, R_WS, R_ACTION, R_RESOURCE = 0, 2, 5, 6
R_CHAIN, R_SEQ, R_CANONICAL, R_SALT = 13, 14, 16, 17
_ROW_TAGS = tuple((index, TAGS[name], name in JSON_NAMES) for name, _, index in ERASABLE)
_MAX_VARIANTS = 256

# (event id, workspace id or None, position, names of the erased fields)
Erased = tuple[uuid.UUID, uuid.UUID | None, int | None, tuple[str, ...]]


def fast_match(
    row: tuple[Any, ...],
    created_us: int,
    rebuild_json: bool,
    sha256: Any = hashlib.sha256,
    dumps: Any = orjson.dumps,
    loads: Any = orjson.loads,
    sort: int = orjson.OPT_SORT_KEYS,
) -> bool:
    """Whether every value is present and matches: the common case, in one pass.
    ``rebuild_json``: the JSON text came back from jsonb (keys reordered, spacing changed)."""
    salt = row[R_SALT] or b""
    out: list[Any] = [VERSION, row[R_ID], row[R_WS], row[R_ACTION], row[R_RESOURCE], created_us]
    used = 0
    try:
        for index, tag, is_json in _ROW_TAGS:
            value = row[index]
            if value is None:
                out.append(None)
                continue
            data = dumps(loads(value), option=sort) if is_json and rebuild_json else value.encode()
            out.append(sha256(salt[used : used + SALT_BYTES] + tag + data).hexdigest())
            used += SALT_BYTES
        return used == len(salt) and dumps(out) == row[R_CANONICAL]
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return False


def differences(
    row: tuple[Any, ...], created_us: int, rebuild_json: bool
) -> tuple[list[str], list[str], list[str]] | None:
    """(columns that differ from what was hashed, fields erased, fields removed with their
    salt kept), or None when the stored canonical form is unreadable."""
    data = row[R_CANONICAL]
    hashed = parse(bytes(data))
    if hashed is None:
        return None
    wrong: list[str] = []
    for position, name, value in (
        (C_ID, "id", row[R_ID]),
        (C_WORKSPACE, "workspace_id", row[R_WS]),
        (C_ACTION, "action", row[R_ACTION]),
        (C_RESOURCE, "resource", row[R_RESOURCE]),
        (C_CREATED, "created_at", created_us),
    ):
        if hashed[position] != value:
            wrong.append(name)
    salt = row[R_SALT]
    pieces = slots(hashed, None if salt is None else bytes(salt))
    committed = sum(1 for _, position, _ in ERASABLE if hashed[position] is not None)
    if salt is not None and len(salt) != committed * SALT_BYTES:
        wrong.append("pii_salt")
    erased: list[str] = []
    removed: list[str] = []
    for name, position, index in ERASABLE:
        value, commitment = row[index], hashed[position]
        if commitment is None:
            if value is not None:
                wrong.append(name)
            continue
        piece = pieces.get(name)
        if value is None:
            # Erasure zeroes the value's salt with it: a value merely deleted keeps a salt
            # that would still open the commitment, and is tampering, not an erasure.
            (erased if piece == ERASED_SALT else removed).append(name)
            continue
        if (
            piece is None
            or piece == ERASED_SALT
            or not _matches(piece, name, value, commitment, rebuild_json and name in JSON_NAMES)
        ):
            wrong.append(name)
    return wrong, erased, removed


def _matches(salt: bytes, name: str, value: str, commitment: str, rebuild_json: bool) -> bool:
    tag = TAGS[name]
    if hashlib.sha256(salt + tag + value.encode()).hexdigest() == commitment:
        return True
    if not rebuild_json and name not in JSON_NAMES:
        return False
    # JSON text from anywhere but the writer's own bytes (jsonb, an export) may differ in
    # spelling only: rebuilt in the writer's form before it counts as changed.
    for text in json_variants(value):
        if hashlib.sha256(salt + tag + text).hexdigest() == commitment:
            return True
    return False


def json_variants(text: str) -> Iterator[bytes]:
    """The texts the writer may have stored for a value that jsonb gives back as ``text``.

    jsonb keeps a number's value but not its spelling: orjson writes the float 1e16 as
    ``1e+16``, which comes back as ``10000000000000000`` (read again as an integer), and
    ``-0.0`` comes back as ``0.0``. Each such number is tried both ways (at most 256 forms).
    """
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return
    yield orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    spots: list[tuple[Any, Any, Any]] = []
    _find_spots(value, None, None, spots)
    if not spots or 2 ** len(spots) > _MAX_VARIANTS:
        return
    for choice in itertools.product((False, True), repeat=len(spots)):
        if not any(choice):
            continue
        for flip, (parent, key, number) in zip(choice, spots, strict=True):
            parent[key] = _other_spelling(number) if flip else number
        yield orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    for parent, key, number in spots:
        parent[key] = number


def _find_spots(value: Any, parent: Any, key: Any, out: list[tuple[Any, Any, Any]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _find_spots(v, value, k, out)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _find_spots(v, value, i, out)
    elif _respelt(value) and parent is not None:
        out.append((parent, key, value))


def _respelt(value: Any) -> bool:
    """Whether jsonb may give this number back in another spelling."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) >= 10**16
    return isinstance(value, float) and value == 0.0


def _other_spelling(number: int | float) -> float:
    return -0.0 if isinstance(number, float) else float(number)
