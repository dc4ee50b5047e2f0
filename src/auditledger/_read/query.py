"""Keyset pages of audit_logs for a set of filters, on PostgreSQL and SQLite.

Queries of one workspace are ordered by its chain position (``chain_seq``): gap-free and in
commit order, so a reader resuming from a cursor never misses an event that committed late with
an older ``created_at``. Queries across workspaces are ordered by ``(created_at, id)``, unique
and never null. No query uses OFFSET: each page starts strictly after the last event shown.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, Text, cast, func, or_, select, tuple_

from .._chain.canonical import micros
from .._db.schema import audit_logs
from .._events import AuditEvent
from .cursor import Position
from .filters import Filters, IpNetwork

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
c = audit_logs.c
EVENT_COLUMNS = (
    c.id,
    c.user_id,
    c.workspace_id,
    c.ip_address,
    c.user_agent,
    c.action,
    c.resource,
    c.resource_id,
    c.details,
    c.previous_value,
    c.new_value,
    c.created_at,
    c.sanitised,
    c.chain_seq,
)


def to_event(row: Any) -> AuditEvent:
    return AuditEvent(
        id=row.id,
        action=row.action,
        created_at=row.created_at,
        user_id=row.user_id,
        workspace_id=row.workspace_id,
        ip_address=row.ip_address,
        user_agent=row.user_agent,
        resource=row.resource,
        resource_id=row.resource_id,
        details=row.details,
        previous_value=row.previous_value,
        new_value=row.new_value,
        sanitised=row.sanitised,
        seq=row.chain_seq,
    )


def position_of(filters: Filters, event: AuditEvent) -> Position:
    if filters.workspace is not None:
        return Position(seq=event.seq)
    return Position(created_us=micros(event.created_at), event_id=event.id)


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped


def conditions(filters: Filters) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if filters.workspace is not None:
        # chain_id, not workspace_id: the chain index then gives the order for free.
        where.append(c.chain_id == filters.workspace)
    for name in ("user_id", "action", "resource", "resource_id"):
        value = getattr(filters, name)
        if value is not None:
            where.append(c[name] == value)
    if filters.action_prefix is not None:
        where.append(c.action.like(_like(filters.action_prefix) + "%", escape="\\"))
    if filters.since is not None:
        where.append(c.created_at >= filters.since)
    if filters.until is not None:
        where.append(c.created_at < filters.until)
    if filters.text is not None:
        pattern = "%" + _like(filters.text.lower()) + "%"
        where.append(
            or_(
                *(
                    func.lower(cast(column, Text)).like(pattern, escape="\\")
                    for column in (c.resource_id, c.details, c.previous_value, c.new_value)
                )
            )
        )
    return where


def build(
    filters: Filters, after: Position, size: int | None, columns: tuple[Any, ...] = EVENT_COLUMNS
) -> Select[Any]:
    """The next ``size`` rows (None: all) strictly after ``after`` in the query's order."""
    where = conditions(filters)
    newest_first = not filters.oldest_first
    if filters.workspace is not None:
        if after.seq is not None:
            where.append(c.chain_seq < after.seq if newest_first else c.chain_seq > after.seq)
        order = [c.chain_seq.desc() if newest_first else c.chain_seq.asc()]
    else:
        if after.created_us is not None:
            moment = _EPOCH + timedelta(microseconds=after.created_us)
            key = tuple_(c.created_at, c.id)
            bound = tuple_(moment, after.event_id)
            where.append(key < bound if newest_first else key > bound)
        if newest_first:
            order = [c.created_at.desc(), c.id.desc()]
        else:
            order = [c.created_at.asc(), c.id.asc()]
    query = select(*columns).where(*where).order_by(*order)
    return query if size is None else query.limit(size)


def ip_in(network: IpNetwork, text: str | None) -> bool:
    if text is None:
        return False
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return False
    return address.version == network.version and address in network


def post_filter(filters: Filters) -> Callable[[AuditEvent], bool] | None:
    """Filters SQL cannot apply the same way on both databases: addresses in a network.
    (ip_address is free text: a cast to inet would fail on the first value that is not one.)"""
    network = filters.ip
    if network is None:
        return None
    return lambda event: ip_in(network, event.ip_address)


def fetch(
    conn: Connection, filters: Filters, after: Position, want: int
) -> tuple[list[AuditEvent], bool]:
    """Up to ``want`` matching events after ``after``, and whether more follow."""
    keep = post_filter(filters)
    size = want + 1 if keep is None else max(4 * (want + 1), 500)
    out: list[AuditEvent] = []
    position = after
    while True:
        rows = conn.execute(build(filters, position, size)).all()
        for row in rows:
            event = to_event(row)
            if keep is None or keep(event):
                if len(out) == want:
                    return out, True
                out.append(event)
        if len(rows) < size:
            return out, False
        position = position_of(filters, to_event(rows[-1]))


def stream(
    conn: Connection, filters: Filters, after: Position, chunk: int = 2000
) -> Iterator[AuditEvent]:
    """Every match after ``after``, ``chunk`` at a time: memory stays flat however many."""
    position = after
    while True:
        events, more = fetch(conn, filters, position, chunk)
        yield from events
        if not more or not events:
            return
        position = position_of(filters, events[-1])
