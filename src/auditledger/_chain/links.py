"""Links of a hash chain: ``h(n) = SHA-256(0x00 || h(n-1) || n as 8 bytes || canonical(n))``
from ``h(0) = SHA-256(0x01 || "auditledger/chain/v1" || chain id)`` (see ``canonical``), and
how a batch of sealed rows is linked, grouped and locked."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from .canonical import Sealed

_GENESIS_PREFIX = b"\x01auditledger/chain/v1"
_sha256 = hashlib.sha256


def genesis(chain_id: uuid.UUID) -> bytes:
    return _sha256(_GENESIS_PREFIX + chain_id.bytes).digest()


def link(previous: bytes, seq: int, canonical: bytes) -> bytes:
    return _sha256(b"\x00" + previous + seq.to_bytes(8, "big") + canonical).digest()


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
