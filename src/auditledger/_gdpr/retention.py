"""Retention: delete each chain's expired prefix, after recording a signed cut.

A chain is hash-linked from its first event, so only a *prefix* can go: everything before the
first event still inside the retention period (writer clocks differ, so an older event after
a newer one keeps everything after it). The newest event always stays, so the writer keeps
its place in the chain. In order, for each chain:

1. a cut signed with the checkpoint key (first kept position, hash before it) is stored;
2. a ``retention.applied`` event is appended to the chain (cut, policy, count);
3. the prefix is deleted in batches of ``batch`` rows, each its own short transaction, so no
   lock is held for long and the application keeps logging.

Stopped half-way, a second run finishes the deletion under the same cut. Quarantined calls
older than the default period go too, under a cut of their own (no chain).
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, insert, select, text

from .._chain.canonical import NO_WORKSPACE
from .._chain.checkpoints import Signer
from .._chain.cuts import Cut, make_cut
from .._db.engine import make_engine
from .._db.schema import audit_cuts, audit_logs, audit_quarantine, audit_retention
from .._db.urls import normalise_url, resolve_url
from .._errors import AuditLedgerError
from .append import append, record_rows

DEFAULT = "default"
ACTION = "retention.applied"
BATCH = 10_000
# A century: longer is a typo, and would overflow date arithmetic when applied.
MAX_DAYS = 36_500


class RetentionError(AuditLedgerError):
    """A retention command cannot run as given."""


@dataclass
class ChainCut:
    """What apply does (or, in a dry run, would do) to one chain."""

    chain_id: uuid.UUID
    scope: str  # the policy applied: a workspace id, "default", or "--before"
    days: int | None
    expired_before: datetime
    first_kept: int
    count: int  # events below the cut still stored
    cut_id: uuid.UUID | None = None
    deleted: int = 0
    needs_cut: bool = True  # False: an earlier cut already covers it (deletion unfinished)


@dataclass
class RetentionResult:
    chains: list[ChainCut] = field(default_factory=list)
    quarantine_before: datetime | None = None
    quarantine_deleted: int = 0
    quarantine_expired: int = 0  # calls older than quarantine_before (what a dry run reports)
    events: list[uuid.UUID] = field(default_factory=list)  # retention.applied events
    dry_run: bool = False

    @property
    def deleted(self) -> int:
        return sum(c.deleted for c in self.chains)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "deleted": self.deleted,
            "chains": [
                {
                    "chain": str(c.chain_id),
                    "policy": c.scope,
                    "days": c.days,
                    "expired_before": c.expired_before.isoformat(),
                    "first_kept": c.first_kept,
                    "expired": c.count,
                    "deleted": c.deleted,
                    "cut": None if c.cut_id is None else str(c.cut_id),
                }
                for c in self.chains
            ],
            "quarantine_before": None
            if self.quarantine_before is None
            else self.quarantine_before.isoformat(),
            "quarantine_expired": self.quarantine_expired,
            "quarantine_deleted": self.quarantine_deleted,
            "events": [str(e) for e in self.events],
        }


# ---- policies --------------------------------------------------------------------------------


def set_policy(database_url: str | None, days: int, workspace: uuid.UUID | None = None) -> None:
    """Keep events ``days`` days (in ``workspace``, or by default)."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise RetentionError(f"--days must be a whole number from 1 to {MAX_DAYS:,}, not {days!r}")
    scope = DEFAULT if workspace is None else str(workspace)
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.execute(delete(audit_retention).where(audit_retention.c.scope == scope))
            conn.execute(insert(audit_retention).values(scope=scope, days=days, updated_at=_now()))
    finally:
        engine.dispose()


def policies(database_url: str | None) -> list[tuple[str, int, datetime]]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(audit_retention).order_by(audit_retention.c.scope))
            return [(r.scope, int(r.days), r.updated_at) for r in rows]
    finally:
        engine.dispose()


# ---- apply -------------------------------------------------------------------------------------


def apply_retention(
    database_url: str | None,
    *,
    signer: Signer | str | os.PathLike[str] | None,
    workspace: uuid.UUID | None = None,
    before: datetime | None = None,
    dry_run: bool = False,
    actor: str | None = None,
    batch: int = BATCH,
    now: datetime | None = None,
) -> RetentionResult:
    """Delete every chain's expired prefix (one workspace's with ``workspace``), events
    created before ``before`` if given, else older than their policy's period. ``signer``:
    the checkpoint signing key (its path, or a loaded ``Signer``), which signs the cuts."""
    if signer is not None and not isinstance(signer, Signer):
        signer = Signer.from_file(signer)
    if signer is None and not dry_run:
        raise RetentionError("a signing key is needed to sign the cuts (--signing-key)")
    now = now or _now()
    if before is not None:
        # Naive times are UTC, as everywhere else in the read side.
        before = before.replace(tzinfo=UTC) if before.tzinfo is None else before
        if before > now:
            raise RetentionError(
                f"--before {before.isoformat()} is in the future: it would expire events"
                " that no retention period has reached"
            )
    url = normalise_url(resolve_url(database_url))
    engine = make_engine(database_url)
    result = RetentionResult(dry_run=dry_run)
    try:
        rules = {scope: days for scope, days, _ in policies(database_url)}
        for chain_id, head in _chains(engine, workspace):
            plan = _plan_chain(engine, chain_id, head, rules, before, now)
            if plan is not None:
                result.chains.append(plan)
        q_before = before
        if q_before is None and DEFAULT in rules:
            q_before = now - timedelta(days=rules[DEFAULT])
        if workspace is None and q_before is not None:
            result.quarantine_before = q_before
            result.quarantine_expired = _count_quarantine(engine, q_before)
        if dry_run:
            return result
        assert signer is not None
        cuts = [c for c in result.chains if c.needs_cut]
        _record_cuts(engine, signer, cuts)
        per_chain = {
            c.chain_id: {
                "cut": str(c.cut_id),
                "expired_before": c.expired_before.isoformat(),
                "first_kept": c.first_kept,
                "count": c.count,
                "policy": {"scope": c.scope, "days": c.days},
            }
            for c in cuts
        }
        result.events = append(url, record_rows(ACTION, actor, per_chain))
        for c in result.chains:
            c.deleted = _delete_prefix(engine, c.chain_id, c.first_kept, batch)
        if result.quarantine_before is not None:
            result.quarantine_deleted = _expire_quarantine(
                engine, signer, result.quarantine_before, batch
            )
        return result
    finally:
        engine.dispose()


def _chains(engine: Engine, workspace: uuid.UUID | None) -> list[tuple[uuid.UUID, int]]:
    query = (
        select(audit_logs.c.chain_id, func.max(audit_logs.c.chain_seq))
        .where(audit_logs.c.chain_id.is_not(None))
        .group_by(audit_logs.c.chain_id)
    )
    if workspace is not None:
        query = query.where(audit_logs.c.chain_id == workspace)
    with engine.connect() as conn:
        return [(r[0], int(r[1])) for r in conn.execute(query)]


def _plan_chain(
    engine: Engine,
    chain_id: uuid.UUID,
    head: int,
    rules: dict[str, int],
    before: datetime | None,
    now: datetime,
) -> ChainCut | None:
    scope, days = "--before", None
    if before is None:
        scope = str(chain_id) if str(chain_id) in rules else DEFAULT
        if chain_id == NO_WORKSPACE or scope not in rules:
            scope = DEFAULT
        if scope not in rules:
            return None  # no period for this chain: keep everything
        days = rules[scope]
        before = now - timedelta(days=days)
    c = audit_logs.c
    with engine.connect() as conn:
        first = conn.execute(
            select(func.min(c.chain_seq)).where(c.chain_id == chain_id, c.created_at >= before)
        ).scalar()
        first_kept = min(head, int(first) if first is not None else head)
        floor = conn.execute(
            select(func.max(audit_cuts.c.first_seq)).where(audit_cuts.c.chain_id == chain_id)
        ).scalar()
        floor = int(floor) if floor is not None else 1
        count = conn.execute(
            select(func.count()).where(c.chain_id == chain_id, c.chain_seq < max(first_kept, floor))
        ).scalar()
    if not count:
        return None
    plan = ChainCut(chain_id, scope, days, before, max(first_kept, floor), int(count))
    plan.needs_cut = first_kept > floor
    return plan


def _record_cuts(engine: Engine, signer: Signer, cuts: list[ChainCut]) -> None:
    """Sign and store each chain's cut (one transaction) before anything is deleted."""
    c = audit_logs.c
    made: list[Cut] = []
    with engine.connect() as conn:
        for plan in cuts:
            previous = conn.execute(
                select(c.chain_hash).where(
                    c.chain_id == plan.chain_id, c.chain_seq == plan.first_kept - 1
                )
            ).scalar()
            if previous is None:
                raise RetentionError(
                    f"chain {plan.chain_id}: the event at position {plan.first_kept - 1} is"
                    " missing, so no cut can say what the kept events link to (run verify)"
                )
            cut = make_cut(
                signer, plan.chain_id, plan.first_kept, bytes(previous), plan.expired_before,
                time.time_ns(),
            )  # fmt: skip
            plan.cut_id = cut.id
            made.append(cut)
    _store_cuts(engine, made)


def _store_cuts(engine: Engine, cuts: list[Cut]) -> None:
    if not cuts:
        return
    with engine.begin() as conn:
        conn.execute(
            insert(audit_cuts),
            [
                {
                    "id": cut.id,
                    "chain_id": cut.chain_id,
                    "first_seq": cut.first_seq,
                    "previous_hash": cut.previous_hash,
                    "expired_before": cut.expired_before,
                    "created_at": cut.created_at,
                    "key_id": cut.key_id,
                    "body": cut.body,
                    "signature": cut.signature,
                }
                for cut in cuts
            ],
        )


def _delete_prefix(engine: Engine, chain_id: uuid.UUID, first_kept: int, batch: int) -> int:
    """Delete positions below ``first_kept`` in ranges of ``batch`` positions, one short
    transaction each, walking the chain index upwards."""
    c = audit_logs.c
    deleted = 0
    with engine.connect() as conn:
        low = conn.execute(select(func.min(c.chain_seq)).where(c.chain_id == chain_id)).scalar()
    if low is None:
        return 0
    low = int(low)
    while low < first_kept:
        high = min(low + batch, first_kept)
        with engine.begin() as conn:
            _roomy(conn)
            done = conn.execute(
                delete(audit_logs).where(
                    c.chain_id == chain_id, c.chain_seq >= low, c.chain_seq < high
                )
            )
            deleted += done.rowcount
        low = high
    return deleted


def _count_quarantine(engine: Engine, before: datetime) -> int:
    q = audit_quarantine.c
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(q.created_at < before)).scalar() or 0)


def _expire_quarantine(engine: Engine, signer: Signer, before: datetime, batch: int) -> int:
    q = audit_quarantine.c
    if not _count_quarantine(engine, before):
        return 0
    _store_cuts(engine, [make_cut(signer, None, None, None, before, time.time_ns())])
    deleted = 0
    while True:
        with engine.begin() as conn:
            _roomy(conn)
            ids = select(q.id).where(q.created_at < before).limit(batch).scalar_subquery()
            done = conn.execute(delete(audit_quarantine).where(q.id.in_(ids))).rowcount
        deleted += done
        if done < batch:
            return deleted


def _roomy(conn: Connection) -> None:
    """On PostgreSQL, room for the batch's deleted rows in memory: the DELETE trigger checks
    them as one transition table, which spilled to disk at the default work_mem (4 MB) and
    made the deletion several times slower. SET LOCAL: for this transaction only."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SET LOCAL work_mem = '64MB'"))


def _now() -> datetime:
    return datetime.now(UTC)
