"""Hash chains: the canonical form of an event, and how events are linked.

The writer seals new events in version 2 of the canonical form (``_chain_v2.py``), where every
value that may name a person is committed so that it can be erased; version 1, below, is how
events stored before it were hashed, and they keep verifying.

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
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ._chain_v2 import canonical as canonical_v2
from ._chain_v2 import fresh_salts
from ._jsonbytes import dumps_kept

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
_GENESIS_PREFIX = b"\x01auditledger/chain/v1"
PERSONAL_TAGS = {name: name.encode() + b"\x00" for _, name in PERSONAL}
_sha256 = hashlib.sha256
_dumps = orjson.dumps
_loads = orjson.loads
_Fragment = orjson.Fragment
_SORT = orjson.OPT_SORT_KEYS


def chain_of(workspace_id: uuid.UUID | None) -> uuid.UUID:
    return NO_WORKSPACE if workspace_id is None else workspace_id


def genesis(chain_id: uuid.UUID) -> bytes:
    return _sha256(_GENESIS_PREFIX + chain_id.bytes).digest()


def link(previous: bytes, seq: int, canonical: bytes) -> bytes:
    return _sha256(b"\x00" + previous + seq.to_bytes(8, "big") + canonical).digest()


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


def canonical(row: tuple[Any, ...], salt: bytes | None) -> bytes:
    """The canonical bytes of a prepared row (``AUDIT_LOG_COLUMNS`` order, JSON as bytes)."""
    ws = row[2]
    user, ip, ua = row[1], row[3], row[4]
    # The commitments are commitment() inlined: three calls per event showed in profiles.
    return dumps_kept(
        [
            CANONICAL_VERSION,
            _uuid_text(row[0]),
            None if ws is None else _chain_text(ws),
            row[5],
            row[6],
            row[7],
            micros(row[11]),
            None
            if user is None or salt is None
            else _sha256(salt + _TAG_USER + user.encode()).hexdigest(),
            None
            if ip is None or salt is None
            else _sha256(salt + _TAG_IP + ip.encode()).hexdigest(),
            None
            if ua is None or salt is None
            else _sha256(salt + _TAG_UA + ua.encode()).hexdigest(),
            None if row[8] is None else _Fragment(row[8]),
            None if row[9] is None else _Fragment(row[9]),
            None if row[10] is None else _Fragment(row[10]),
            None if row[12] is None else _Fragment(row[12]),
        ]
    )


Sealed = tuple[uuid.UUID, bytes, bytes | None]  # (chain id, canonical bytes, salt)


def seal(rows: list[tuple[Any, ...]]) -> list[Sealed]:
    """Canonical form (version 2, see ``_chain_v2.py``) and salts of each row: CPU work done
    before any chain lock is taken."""
    pool = fresh_salts(len(rows))
    step = len(pool) // len(rows) if rows else 0
    out: list[Sealed] = []
    for i, row in enumerate(rows):
        ws = row[2]
        data, salt = canonical_v2(
            row,
            pool[i * step : (i + 1) * step],
            None if ws is None else _chain_text(ws),
            _uuid_text(row[0]),
            micros(row[11]),
        )
        out.append((chain_of(ws), data, salt or None))
    return out


Head = tuple[int, bytes]  # (seq, hash) of the newest event of a chain


Linked = tuple[uuid.UUID, int, bytes, bytes, bytes | None]  # the CHAIN_COLUMNS of a row


def link_each(sealed: list[Sealed], heads: dict[uuid.UUID, Head]) -> Iterator[Linked]:
    """Chain columns for each sealed row, continuing from ``heads`` (updated in place).

    Called while the chains' locks are held, so it does nothing but hashing; lazily, so a
    sink can send each row as soon as it is linked.
    """
    for chain_id, data, salt in sealed:
        head = heads.get(chain_id)
        seq, previous = head if head is not None else (0, genesis(chain_id))
        seq += 1
        digest = link(previous, seq, data)
        heads[chain_id] = (seq, digest)
        yield chain_id, seq, digest, data, salt


def grouped_by_chain(
    rows: list[tuple[Any, ...]], sealed: list[Sealed]
) -> tuple[list[tuple[Any, ...]], list[Sealed]]:
    """The batch with each chain's rows together, in their order within the chain.

    Stored in this order, a chain's rows of one batch share heap pages, so reading a chain
    in order (verify) visits each page once instead of hopping between the chains' rows on
    it; a chain's link order, and every row's position in it, are unchanged.
    """
    groups: dict[uuid.UUID, list[int]] = {}
    for index, item in enumerate(sealed):
        group = groups.get(item[0])
        if group is None:
            groups[item[0]] = [index]
        else:
            group.append(index)
    if len(groups) < 2:
        return rows, sealed
    order = [index for group in groups.values() for index in group]
    return [rows[i] for i in order], [sealed[i] for i in order]


def link_batch(sealed: list[Sealed], heads: dict[uuid.UUID, Head]) -> list[Linked]:
    return list(link_each(sealed, heads))


def lock_keys(chains: Iterable[uuid.UUID]) -> list[int]:
    """Advisory lock keys (signed 32-bit) of the chains, sorted: every writer takes them in
    the same order, so two writers never wait on each other in a cycle. Two chains sharing a
    key only wait for each other a little more."""
    return sorted({int.from_bytes(c.bytes[12:], "big", signed=True) for c in chains})
