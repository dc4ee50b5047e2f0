"""Retention cuts as the verifier sees them: each chain starts at its newest cut that holds
(see ``_chain/cuts.py``). A cut holds when its signature does and it agrees with the chain:
its first kept position is at or below the chain's head (retention never deletes a chain's
newest event), and the event before that position, while it is still stored, has the hash the
cut names. A cut that does not hold is a problem and moves no start, so the events it claims
expired are reported missing like any other deletion; a chain a cut says kept events from a
position on, but that no longer reaches it, has lost them."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from ..._chain.canonical import NO_WORKSPACE
from ..._chain.cuts import Cut
from .chains import Starts
from .report import BAD_SIGNATURE, MISSING, REWRITTEN, VerifyProblem, VerifyReport

# What the chain holds where a cut points: its head (None without events) and the stored hash
# of each position just before a cut's first kept one.
ChainFacts = dict[uuid.UUID, tuple[int | None, dict[int, bytes]]]


def chain_facts(
    url: str,
    cuts: list[Cut],
    workspace: uuid.UUID | None,
    pg_fetch: Callable[[str, Sequence[Any]], list[Any]] | None = None,
) -> ChainFacts:
    """Two index lookups per chain that has a cut: its head, and the hashes before each cut
    (``pg_fetch``: PostgreSQL through psycopg alone, for verify's start-up)."""
    wanted: dict[uuid.UUID, set[int]] = {}
    for cut in cuts:
        if cut.chain_id is None or cut.first_seq is None:
            continue
        if workspace is None or cut.chain_id == workspace:
            wanted.setdefault(cut.chain_id, set()).add(cut.first_seq - 1)
    facts: ChainFacts = {}
    if not wanted:
        return facts
    if pg_fetch is not None:
        for chain_id, before in wanted.items():
            tops = pg_fetch("SELECT max(chain_seq) FROM audit_logs WHERE chain_id = %s", [chain_id])
            found = pg_fetch(
                "SELECT chain_seq, chain_hash FROM audit_logs"
                " WHERE chain_id = %s AND chain_seq = ANY(%s)",
                [chain_id, sorted(before)],
            )
            before_hashes = {int(s): bytes(h) for s, h in found if h is not None}
            top = tops[0][0] if tops else None
            facts[chain_id] = (None if top is None else int(top), before_hashes)
        return facts
    from sqlalchemy import func, select

    from ..._db.engine import make_engine
    from ..._db.schema import audit_logs

    c = audit_logs.c
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            for chain_id, before in wanted.items():
                head = conn.execute(
                    select(func.max(c.chain_seq)).where(c.chain_id == chain_id)
                ).scalar()
                rows = conn.execute(
                    select(c.chain_seq, c.chain_hash).where(
                        c.chain_id == chain_id, c.chain_seq.in_(sorted(before))
                    )
                ).all()
                hashes = {int(s): bytes(h) for s, h in rows if h is not None}
                facts[chain_id] = (None if head is None else int(head), hashes)
    finally:
        engine.dispose()
    return facts


def chain_starts(
    cuts: list[Cut], keys: dict[str, Any], report: VerifyReport, facts: ChainFacts | None = None
) -> Starts:
    """The start of each chain with a cut that holds; ``facts`` (from ``chain_facts``) are
    what the cuts are checked against (without them, only the signatures are)."""
    starts: dict[uuid.UUID, tuple[int, bytes, Cut]] = {}
    for cut in cuts:
        error = cut.verify(keys)
        if error:
            report.problems.append(
                VerifyProblem(BAD_SIGNATURE, f"retention cut: {error}", checkpoint_id=cut.id)
            )
            continue
        if cut.chain_id is None or cut.first_seq is None or cut.previous_hash is None:
            report.cuts += 1
            continue  # the quarantine's horizon
        if facts is not None:
            if cut.chain_id not in facts:
                continue  # another workspace's chain: not verified in this run
            if not _agrees(cut, cut.chain_id, cut.first_seq, *facts[cut.chain_id], report):
                continue
        report.cuts += 1
        known = starts.get(cut.chain_id)
        if known is None or known[0] < cut.first_seq:
            starts[cut.chain_id] = (cut.first_seq, cut.previous_hash, cut)
    for chain_id, (first, _, cut) in sorted(starts.items(), key=lambda item: str(item[0])):
        report.notes.append(
            f"chain {chain_id} starts at position {first}: retention cut {cut.id} signed"
            f" {cut.created_at:%Y-%m-%d %H:%M:%S} UTC (events before"
            f" {cut.expired_before:%Y-%m-%d %H:%M:%S} UTC expired)"
        )
    return {chain_id: (first, previous) for chain_id, (first, previous, _) in starts.items()}


def _agrees(
    cut: Cut,
    chain_id: uuid.UUID,
    first: int,
    head: int | None,
    hashes: dict[int, bytes],
    report: VerifyReport,
) -> bool:
    workspace = None if chain_id == NO_WORKSPACE else chain_id
    if head is None or head < first:
        ends = "has no events left" if head is None else f"ends at position {head}"
        report.problems.append(
            VerifyProblem(
                MISSING,
                f"retention cut {cut.id} kept the events from position {first} on, but the"
                f" chain {ends}: they are missing (retention never deletes a chain's newest"
                " event)",
                workspace_id=workspace,
                seq=first,
                checkpoint_id=cut.id,
            )
        )
        return False
    before = hashes.get(first - 1)
    if before is not None and before != cut.previous_hash:
        report.problems.append(
            VerifyProblem(
                REWRITTEN,
                f"retention cut {cut.id} does not match the chain: the event at position"
                f" {first - 1} has another hash than the cut names, so the cut is not used",
                workspace_id=workspace,
                seq=first - 1,
                checkpoint_id=cut.id,
            )
        )
        return False
    return True
