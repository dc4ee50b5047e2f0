"""The export bundle: one ZIP holding a contiguous range of a workspace's chain, and what an
auditor needs to check it without our database or code (specified in docs/bundle-format.md).

    manifest.json       format, chain, range, the hash before the range, SHA-256 of every file
    events.jsonl        the range in chain order: columns, position, link hash, canonical form
    checkpoints.jsonl   the signed checkpoints that name a position inside the range
    keys/<key id>.pem   the public keys given to the export (a verifier should pin its own)
"""

from __future__ import annotations

import base64
import hashlib
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

import orjson
from sqlalchemy import Connection, func, select

from .._chain.canonical import NO_WORKSPACE
from .._chain.checkpoints import Checkpoint
from .._chain.links import genesis
from .._db.schema import audit_checkpoints, audit_logs
from .query import EVENT_COLUMNS, to_event
from .rows import event_record, utc_text

FORMAT = "auditledger/bundle/v1"
MANIFEST, EVENTS, CHECKPOINTS = "manifest.json", "events.jsonl", "checkpoints.jsonl"
_CHUNK = 2000
c = audit_logs.c


@dataclass(frozen=True)
class Range:
    """Positions ``first..last`` of one chain, and the link hashes around them."""

    chain_id: uuid.UUID
    first: int
    last: int
    previous_hash: bytes  # of position first - 1 (the chain's start hash when first is 1)
    last_hash: bytes
    since: datetime | None
    until: datetime | None

    @property
    def size(self) -> int:
        return self.last - self.first + 1


def find_range(
    conn: Connection, chain_id: uuid.UUID, since: datetime | None, until: datetime | None
) -> Range | None:
    """The smallest contiguous range holding every event of the chain in [since, until).

    Positions follow commit order and ``created_at`` the call, so a few events just outside
    the times can sit inside the range: a chain can only be checked without holes."""
    in_chain = c.chain_id == chain_id
    first_q = select(func.min(c.chain_seq)).where(in_chain)
    last_q = select(func.max(c.chain_seq)).where(in_chain)
    if since is not None:
        first_q = first_q.where(c.created_at >= since)
        last_q = last_q.where(c.created_at >= since)
    if until is not None:
        first_q = first_q.where(c.created_at < until)
        last_q = last_q.where(c.created_at < until)
    first, last = conn.execute(first_q).scalar(), conn.execute(last_q).scalar()
    if first is None or last is None:
        return None
    last = max(last, covering_erasures(conn, chain_id, first, last))
    hashes = dict(
        conn.execute(
            select(c.chain_seq, c.chain_hash).where(in_chain, c.chain_seq.in_([first - 1, last]))
        ).all()
    )
    previous = genesis(chain_id) if first == 1 else bytes(hashes.get(first - 1) or b"")
    return Range(chain_id, first, last, previous, bytes(hashes[last]), since, until)


def covering_erasures(conn: Connection, chain_id: uuid.UUID, first: int, last: int) -> int:
    """The position of the last gdpr.erasure event after the range that names an event inside
    it (``last`` when none does).

    A value erased from an event is only an erasure, not tampering, when a later gdpr.erasure
    event of the chain covers it; that event is appended at erasure time, usually long after
    the range. The bundle takes the chain up to it, so that an offline verifier checks it like
    every other event, from the same links and checkpoints, instead of trusting a claim."""
    query = (
        select(c.chain_seq, c.details)
        .where(c.chain_id == chain_id, c.action == "gdpr.erasure", c.chain_seq > last)
        .order_by(c.chain_seq.desc())
    )
    for seq, details in conn.execute(query):
        listed = details.get("events") if isinstance(details, dict) else None
        ids = [i for i in listed if isinstance(i, str)] if isinstance(listed, list) else []
        for start in range(0, len(ids), 500):
            chunk = [_uuid(i) for i in ids[start : start + 500]]
            inside = select(func.count()).where(
                c.chain_id == chain_id,
                c.id.in_([i for i in chunk if i is not None]),
                c.chain_seq >= first,
                c.chain_seq <= last,
            )
            if conn.execute(inside).scalar():
                return int(seq)
    return last


def _uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def _chain_rows(conn: Connection, span: Range) -> Iterator[Any]:
    columns = (*EVENT_COLUMNS, c.chain_hash, c.canonical, c.pii_salt)
    after = span.first - 1
    while after < span.last:
        query = (
            select(*columns)
            .where(c.chain_id == span.chain_id, c.chain_seq > after, c.chain_seq <= span.last)
            .order_by(c.chain_seq)
            .limit(_CHUNK)
        )
        rows = conn.execute(query).all()
        if not rows:
            return
        yield from rows
        after = rows[-1].chain_seq


def event_line(row: Any) -> bytes:
    record = event_record(to_event(row))
    record["chain_hash"] = bytes(row.chain_hash).hex()
    record["canonical"] = base64.b64encode(bytes(row.canonical)).decode()
    record["pii_salt"] = None if row.pii_salt is None else bytes(row.pii_salt).hex()
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def covering_checkpoints(conn: Connection, span: Range) -> list[Checkpoint]:
    """Stored checkpoints naming a position of this chain inside the range (oldest first).
    The signatures are not checked here: the verifier does that, with keys it trusts."""
    out = []
    chain = str(span.chain_id)
    query = select(audit_checkpoints).order_by(audit_checkpoints.c.created_at)
    for r in conn.execute(query):
        try:
            heads = orjson.loads(r.body).get("heads", [])
            inside = any(h[0] == chain and span.first <= int(h[1]) <= span.last for h in heads)
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError, IndexError):
            continue  # verify reports a damaged stored checkpoint; it covers nothing here
        if inside:
            out.append(Checkpoint(r.id, r.created_at, r.key_id, bytes(r.body), bytes(r.signature)))
    return out


def _write_member(zf: zipfile.ZipFile, name: str, chunks: Iterator[bytes]) -> tuple[str, int]:
    digest = hashlib.sha256()
    count = 0
    with zf.open(name, "w", force_zip64=True) as member:
        for data in chunks:
            digest.update(data)
            member.write(data)
            count += 1
    return digest.hexdigest(), count


def write_bundle(
    out: IO[bytes],
    conn: Connection,
    span: Range,
    checkpoints: list[Checkpoint],
    public_keys: dict[str, bytes],
    exported_at: datetime,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the bundle ZIP to ``out``; returns the number of events in it."""
    files: dict[str, str] = {}

    def lines() -> Iterator[bytes]:
        for index, row in enumerate(_chain_rows(conn, span), 1):
            yield event_line(row)
            if progress is not None and index % 1000 == 0:
                progress(index)

    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        files[EVENTS], events = _write_member(zf, EVENTS, lines())
        files[CHECKPOINTS], _ = _write_member(zf, CHECKPOINTS, (cp.to_line() for cp in checkpoints))
        for key_id, pem in sorted(public_keys.items()):
            name = f"keys/{key_id}.pem"
            files[name], _ = _write_member(zf, name, iter([pem]))
        manifest = {
            "format": FORMAT,
            "chain_id": str(span.chain_id),
            "workspace_id": None if span.chain_id == NO_WORKSPACE else str(span.chain_id),
            "since": None if span.since is None else utc_text(span.since),
            "until": None if span.until is None else utc_text(span.until),
            "first_seq": span.first,
            "last_seq": span.last,
            "events": events,
            "previous_hash": span.previous_hash.hex(),
            "exported_at": utc_text(exported_at),
            "files": files,
        }
        zf.writestr(
            MANIFEST, orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        )
    if progress is not None:
        progress(events)
    return events
