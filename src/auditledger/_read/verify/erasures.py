"""Telling an authorised erasure from tampering: each value removed from an event must be
covered by a ``gdpr.erasure`` event of the same chain, at a later position, that verified
itself and names that event and that column.

A ``gdpr.erasure`` event's details carry ``"erased": {"<event id>": ["ip_address", ...]}``.
Older ones carry only ``"events": [...]``; they are taken to cover every column erasure may
touch (``ERASABLE_COLUMNS``), since that is all the erasure rule ever allowed them to remove.
The same check serves the database verifier and ``verify-bundle`` (where the exporter extends
the range to the covering events, so that they are checked like any other).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from ..._chain.canonical import NO_WORKSPACE
from ..._chain.v2 import ERASABLE
from .report import MODIFIED, VerifyProblem

ACTION = "gdpr.erasure"
ERASABLE_COLUMNS = frozenset(name for name, _, _ in ERASABLE)
# (event id, workspace id or None, position, names of the erased fields): see columns.py
Erased = tuple[uuid.UUID, uuid.UUID | None, int | None, tuple[str, ...]]


@dataclass(frozen=True)
class Coverer:
    """A gdpr.erasure event as the coverage check needs it."""

    event_id: uuid.UUID
    chain_id: uuid.UUID | None
    seq: int | None
    covers: dict[str, frozenset[str]]  # event id text -> columns it says were erased


def coverer(event_id: Any, chain_id: Any, seq: int | None, details: Any) -> Coverer | None:
    """Read a gdpr.erasure event's details (JSON text or bytes); None when they say nothing
    usable (a forged or damaged event: the chain walk reports it)."""
    try:
        data = orjson.loads(details) if isinstance(details, str | bytes) else details
        event = uuid.UUID(str(event_id))
        chain = None if chain_id is None else uuid.UUID(str(chain_id))
    except (orjson.JSONDecodeError, ValueError, TypeError):
        return None
    if not isinstance(data, dict):
        return None
    covers: dict[str, frozenset[str]] = {}
    erased = data.get("erased")
    if isinstance(erased, dict):
        for key, names in erased.items():
            if isinstance(names, list):
                covers[key] = frozenset(n for n in names if n in ERASABLE_COLUMNS)
    else:
        events = data.get("events")
        for key in events if isinstance(events, list) else ():
            if isinstance(key, str):
                covers[key] = ERASABLE_COLUMNS
    return Coverer(event, chain, seq, covers)


def check_coverage(
    problems: list[VerifyProblem], erased: Iterable[Erased], coverers: Iterable[Coverer]
) -> int:
    """Report every erased value that no verified, later gdpr.erasure event of its chain
    covers; returns how many events were found uncovered."""
    # A coverer the walk found wrong (changed, inserted, moved) vouches for nothing.
    doubted = {p.event_id for p in problems if p.event_id is not None}
    by_event: dict[str, list[Coverer]] = {}
    for c in coverers:
        if c.event_id in doubted:
            continue
        for key in c.covers:
            by_event.setdefault(key, []).append(c)
    uncovered = 0
    for event_id, workspace, seq, names in erased:
        chain = NO_WORKSPACE if workspace is None else workspace
        allowed: set[str] = set()
        for c in by_event.get(str(event_id), ()):
            if c.chain_id == chain and c.seq is not None and seq is not None and c.seq > seq:
                allowed |= c.covers[str(event_id)]
        missing = [n for n in names if n not in allowed]
        if not missing:
            continue
        uncovered += 1
        problems.append(
            VerifyProblem(
                MODIFIED,
                "values removed without a gdpr.erasure event covering them: " + ", ".join(missing),
                event_id,
                workspace,
                seq,
            )
        )
    return uncovered


def database_coverers(
    url: str, postgres: bool, pg_fetch: Callable[[str], list[Any]] | None = None
) -> list[Coverer]:
    """Every gdpr.erasure event of the log (``pg_fetch``: PostgreSQL without SQLAlchemy)."""
    details = "details::text" if postgres else "details"
    query = f"SELECT id, chain_id, chain_seq, {details} FROM audit_logs WHERE action = '{ACTION}'"
    out: list[Coverer] = []
    if pg_fetch is not None:
        for event_id, chain_id, seq, data in pg_fetch(query):
            found = None if data is None else coverer(event_id, chain_id, seq, data)
            if found is not None:
                out.append(found)
        return out
    from sqlalchemy import text

    from ..._db.engine import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            for event_id, chain_id, seq, data in conn.execute(text(query)):
                if data is None:
                    continue
                found = coverer(event_id, chain_id, seq, data)
                if found is not None:
                    out.append(found)
    finally:
        engine.dispose()
    return out
