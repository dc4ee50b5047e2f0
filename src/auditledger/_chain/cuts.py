"""Signed cuts: where a chain starts after retention deleted its expired prefix.

A cut states, under an Ed25519 signature, the first position a chain keeps and the link hash
of the event before it (what the first kept event links to). It is stored in ``audit_cuts``
*before* anything is deleted; a verifier then starts the chain there instead of at its genesis.
Events missing from a chain without a signed cut covering them are still reported as missing.
A cut with no chain records the horizon below which quarantined calls were deleted. The body
is JSON with sorted keys::

    {"chain": "...", "created_at_us": ..., "expired_before_us": ..., "first_kept": N,
     "format": "auditledger/cut/v1", "id": "...", "key_id": "...", "previous_hash": "hex"}
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from .._ids import uuid7_from_ns
from .canonical import micros
from .checkpoints import Signer

FORMAT = "auditledger/cut/v1"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Cut:
    id: uuid.UUID
    chain_id: uuid.UUID | None
    first_seq: int | None
    previous_hash: bytes | None
    expired_before: datetime
    created_at: datetime
    key_id: str
    body: bytes
    signature: bytes

    def verify(self, keys: dict[str, Any]) -> str | None:
        """None when the signature is good and the columns say what was signed."""
        from cryptography.exceptions import InvalidSignature

        public = keys.get(self.key_id)
        if public is None:
            return f"no public key with id {self.key_id} was given"
        try:
            public.verify(self.signature, self.body)
        except InvalidSignature:
            return "the signature does not match the body"
        try:
            data = orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return "the body is not JSON"
        expected = _body_fields(self)
        if any(data.get(k) != v for k, v in expected.items()):
            return "the stored columns do not match the signed body"
        return None


def _body_fields(cut: Cut) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "id": str(cut.id),
        "chain": None if cut.chain_id is None else str(cut.chain_id),
        "first_kept": cut.first_seq,
        "previous_hash": None if cut.previous_hash is None else cut.previous_hash.hex(),
        "expired_before_us": micros(cut.expired_before),
        "created_at_us": micros(cut.created_at),
        "key_id": cut.key_id,
    }


def make_cut(
    signer: Signer,
    chain_id: uuid.UUID | None,
    first_seq: int | None,
    previous_hash: bytes | None,
    expired_before: datetime,
    now_ns: int,
) -> Cut:
    cut_id = uuid7_from_ns(now_ns, os.urandom(10))
    created = _EPOCH + timedelta(microseconds=now_ns // 1000)
    expired = _EPOCH + timedelta(microseconds=micros(expired_before))
    unsigned = Cut(
        cut_id, chain_id, first_seq, previous_hash, expired, created, signer.key_id, b"", b""
    )
    body = orjson.dumps(_body_fields(unsigned), option=orjson.OPT_SORT_KEYS)
    return Cut(
        cut_id,
        chain_id,
        first_seq,
        previous_hash,
        expired,
        created,
        signer.key_id,
        body,
        signer.sign(body),
    )


def read_cuts(database_url: str) -> list[Cut]:
    """Every stored cut, oldest first."""
    from sqlalchemy import select

    from .._db.engine import make_engine
    from .._db.schema import audit_cuts

    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            query = select(audit_cuts).order_by(audit_cuts.c.created_at)
            return [
                Cut(
                    r.id,
                    r.chain_id,
                    r.first_seq,
                    None if r.previous_hash is None else bytes(r.previous_hash),
                    r.expired_before,
                    r.created_at,
                    r.key_id,
                    bytes(r.body),
                    bytes(r.signature),
                )
                for r in conn.execute(query)
            ]
    finally:
        engine.dispose()
