"""Keyset pages of audit_logs for a set of filters, on PostgreSQL and SQLite.

Three orders, each a unique key, so a page starts strictly after the last event shown and no
query uses OFFSET:

- one workspace, in chain order (``chain_seq``): gap-free and in commit order, so a reader
  resuming from a cursor never misses an event that committed late with an older
  ``created_at``. Open-ended oldest-first queries (the feeds a SIEM resumes) always use it.
- one workspace in a time window, newest first (or oldest first up to an ``until``): by
  ``(created_at, chain_seq)``, which the ``(chain_id, created_at, chain_seq)`` index serves
  in order, so a window reads only the rows of its page even in PostgreSQL's generic plans.
- across workspaces: by ``(created_at, id)``, unique and never null.

Each combination of filters is one *shape*, built once with bind parameters and reused: the
statement text stays the same from call to call, so psycopg prepares it and SQLAlchemy never
builds it again (see ``pages.py``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    Text,
    Uuid,
    bindparam,
    cast,
    func,
    literal_column,
    or_,
    select,
    tuple_,
)

from .._chain.canonical import micros
from .._db.schema import UTCDateTime, audit_logs
from .._events import AuditEvent
from .cursor import Position
from .filters import Filters, IpNetwork

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
c = audit_logs.c
# The columns every read selects first, in this order: to_event() maps them by position.
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
_EQUAL = ("user_id", "action", "resource", "resource_id")

# The orders (see the module's docstring), named as Position.kind names the keys.
CHAIN, WINDOW, ACROSS = "s", "c", "t"


def to_event(row: Any) -> AuditEvent:
    """An event from a row whose first columns are EVENT_COLUMNS, by position: reading 50
    rows by attribute name cost more than the query itself."""
    created = row[11]
    if created.tzinfo is not UTC:
        # psycopg gives the session's time zone; SQLAlchemy's type already gives UTC.
        created = created.astimezone(UTC)
    return AuditEvent(
        row[0], row[5], created, row[1], row[2], row[3], row[4], row[6], row[7], row[8],
        row[9], row[10], row[12], row[13],
    )  # fmt: skip


def order_of(filters: Filters) -> str:
    """Which order a query pages in: CHAIN, WINDOW or ACROSS."""
    if filters.workspace is None:
        return ACROSS
    if filters.until is not None or (filters.since is not None and not filters.oldest_first):
        return WINDOW
    return CHAIN


def position_of(filters: Filters, event: AuditEvent) -> Position:
    order = order_of(filters)
    if order == CHAIN:
        return Position(seq=event.seq)
    if order == WINDOW:
        return Position(created_us=micros(event.created_at), seq=event.seq)
    return Position(created_us=micros(event.created_at), event_id=event.id)


def needs_start(filters: Filters, after: Position) -> bool:
    """Whether this is the first page of an open-ended oldest-first query from ``since``:
    in chain order, which knows nothing of times, it would walk every event before
    ``since`` first (92 ms for a workspace of 900,000 events)."""
    return (
        after.at_start
        and filters.oldest_first
        and filters.since is not None
        and order_of(filters) == CHAIN
    )


_IN_CHAIN = c.chain_id == bindparam("ws", type_=Uuid())
_FROM_SINCE = c.created_at >= bindparam("since", type_=UTCDateTime())

# The chain's first and last positions, and the position of its first event in time order
# from ``since`` on: three index probes (see LOWEST_FROM).
START_PROBE = select(
    select(func.min(c.chain_seq)).where(_IN_CHAIN).scalar_subquery(),
    select(func.max(c.chain_seq)).where(_IN_CHAIN).scalar_subquery(),
    select(c.chain_seq)
    .where(_IN_CHAIN, _FROM_SINCE)
    .order_by(c.created_at, c.chain_seq)
    .limit(literal_column("1"))  # text, not a bind: the values of these statements are ours
    .scalar_subquery(),
)

# The lowest chain position of an event at or after ``since``, over the index of times. Exact
# where no single probe is: a late commit can put such an event before one with an older time.
# Used only when ``since`` is nearer the chain's end than its start (else the chain walk from
# the start is the cheaper way), so the cost is that of the smaller part; a feed resumed from a
# recent ``since`` reads only that. "+ 0": a plain min(chain_seq) is planned as a walk of the
# chain index from its start, filtering times: the very walk this query exists to avoid.
LOWEST_FROM = select(func.min(c.chain_seq + literal_column("0"))).where(_IN_CHAIN, _FROM_SINCE)


def start_values(filters: Filters) -> dict[str, Any]:
    return {"ws": filters.workspace, "since": filters.since}


def fits(filters: Filters, position: Position) -> bool:
    """Whether ``position`` is a key of the query's order (or its start)."""
    return position.at_start or position.kind == order_of(filters)


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass(frozen=True)
class Shape:
    """Which filters a query has, not their values: one SQL text per shape."""

    workspace: bool
    equal: tuple[str, ...]
    prefix: bool
    since: bool
    until: bool
    text: bool
    oldest_first: bool
    order: str  # CHAIN, WINDOW or ACROSS
    after: str  # Position.kind, "b" at the start
    limited: bool


def shape_of(filters: Filters, after: Position, limited: bool) -> Shape:
    return Shape(
        workspace=filters.workspace is not None,
        equal=tuple(n for n in _EQUAL if getattr(filters, n) is not None),
        prefix=filters.action_prefix is not None,
        since=filters.since is not None,
        until=filters.until is not None,
        text=filters.text is not None,
        oldest_first=filters.oldest_first,
        order=order_of(filters),
        after=after.kind,
        limited=limited,
    )


def values_of(filters: Filters, after: Position, size: int | None) -> dict[str, Any]:
    """The bind values of the query's shape."""
    values: dict[str, Any] = {}
    if filters.workspace is not None:
        values["ws"] = filters.workspace
    for name in _EQUAL:
        if getattr(filters, name) is not None:
            values[name] = getattr(filters, name)
    if filters.action_prefix is not None:
        values["prefix"] = _like(filters.action_prefix) + "%"
    if filters.since is not None:
        values["since"] = filters.since
    if filters.until is not None:
        values["until"] = filters.until
    if filters.text is not None:
        values["text"] = "%" + _like(filters.text.lower()) + "%"
    if after.created_us is not None:
        values["at"] = _EPOCH + timedelta(microseconds=after.created_us)
    if after.seq is not None:
        values["seq"] = after.seq
    if after.event_id is not None:
        values["event_id"] = after.event_id
    if size is not None:
        values["size"] = size
    return values


def conditions(filters: Filters) -> list[ColumnElement[bool]]:
    """The filters as SQL with their values (the follower's polls)."""
    return _conditions(shape_of(filters, Position(), False), values_of(filters, Position(), None))


def _conditions(shape: Shape, values: dict[str, Any] | None = None) -> list[ColumnElement[bool]]:
    def bind(name: str, type_: Any = None) -> Any:
        if values is not None:
            return bindparam(name, values[name], type_=type_)
        return bindparam(name, type_=type_)

    where: list[ColumnElement[bool]] = []
    if shape.workspace:
        # chain_id, not workspace_id: the chain's indexes then give the order for free.
        where.append(c.chain_id == bind("ws", Uuid()))
    for name in shape.equal:
        where.append(c[name] == bind(name, Text()))
    if shape.prefix:
        where.append(c.action.like(bind("prefix", Text()), escape="\\"))
    if shape.since:
        where.append(c.created_at >= bind("since", UTCDateTime()))
    if shape.until:
        where.append(c.created_at < bind("until", UTCDateTime()))
    if shape.text:
        pattern = bind("text", Text())
        where.append(
            or_(
                *(
                    func.lower(cast(column, Text)).like(pattern, escape="\\")
                    for column in (c.resource_id, c.details, c.previous_value, c.new_value)
                )
            )
        )
    return where


def _statement(shape: Shape, columns: tuple[Any, ...]) -> Select[Any]:
    where = _conditions(shape)
    forward = shape.oldest_first
    if shape.order == CHAIN:
        keys: tuple[Any, ...] = (c.chain_seq,)
        bound: tuple[Any, ...] = (bindparam("seq", type_=BigInteger()),)
    elif shape.order == WINDOW:
        keys = (c.created_at, c.chain_seq)
        bound = (bindparam("at", type_=UTCDateTime()), bindparam("seq", type_=BigInteger()))
    else:
        keys = (c.created_at, c.id)
        bound = (bindparam("at", type_=UTCDateTime()), bindparam("event_id", type_=Uuid()))
    if shape.after != "b":
        key, value = (keys[0], bound[0]) if len(keys) == 1 else (tuple_(*keys), tuple_(*bound))
        where.append(key > value if forward else key < value)
    ordering = [k.asc() if forward else k.desc() for k in keys]
    query = select(*columns).where(*where).order_by(*ordering)
    return query.limit(bindparam("size", type_=BigInteger())) if shape.limited else query


_statements: dict[tuple[Shape, int], tuple[Select[Any], tuple[Any, ...]]] = {}


def statement(shape: Shape, columns: tuple[Any, ...] = EVENT_COLUMNS) -> Select[Any]:
    """The query of a shape, with bind parameters for its values (built once per shape)."""
    key = (shape, id(columns))
    found = _statements.get(key)
    if found is None or found[1] is not columns:
        found = _statements[key] = (_statement(shape, columns), columns)
    return found[0]


def build(
    filters: Filters, after: Position, size: int | None, columns: tuple[Any, ...] = EVENT_COLUMNS
) -> Select[Any]:
    """The next ``size`` rows (None: all) strictly after ``after`` in the query's order,
    with the values bound (for a one-off run; pages use the shape's statement as it is)."""
    shape = shape_of(filters, after, size is not None)
    return statement(shape, columns).params(values_of(filters, after, size))


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
