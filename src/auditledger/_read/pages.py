"""Running the page queries of ``query.py``: pages, and streams of every match.

On PostgreSQL each shape's statement is compiled to text once and run on psycopg's own cursor:
the text is the same on every call, so psycopg prepares it after a few runs, and none of
SQLAlchemy's per-statement work (building, cache keys, result wrapping) is paid per page; it
cost three times the query's own round trip. Streams use a server-side cursor, so memory stays
flat and the whole stream reads one snapshot. SQLite runs the same statements through
SQLAlchemy, whose column types turn its text back into UUIDs, times and JSON.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, Select
from sqlalchemy.exc import DBAPIError, StatementError

from .._events import AuditEvent
from .cursor import Position
from .filters import Filters
from .query import (
    EVENT_COLUMNS,
    LOWEST_FROM,
    START_PROBE,
    needs_start,
    position_of,
    post_filter,
    shape_of,
    start_values,
    statement,
    to_event,
    values_of,
)

# SQL text per statement (each built once and kept: the shapes' and the start probes').
_texts: dict[tuple[int, str], tuple[str, Select[Any]]] = {}


def _text(conn: Connection, query: Select[Any]) -> str:
    key = (id(query), conn.dialect.name)
    found = _texts.get(key)
    if found is None or found[1] is not query:
        found = _texts[key] = (str(query.compile(dialect=conn.dialect)), query)
    return found[0]


def _run(conn: Connection, query: Select[Any], values: dict[str, Any]) -> list[Any]:
    """The rows of a kept statement, as tuples."""
    if conn.dialect.name != "postgresql":
        return list(conn.execute(query, values).all())
    sql = _text(conn, query)
    driver: Any = conn.connection.driver_connection
    try:
        with driver.cursor() as cursor:
            cursor.execute(sql, values)
            return list(cursor.fetchall())
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _wrapped(conn, sql, values, exc) from exc


def _wrapped(conn: Connection, sql: str, values: dict[str, Any], exc: Any) -> StatementError:
    """A driver error as SQLAlchemy would have raised it; a dead connection is taken out of
    the pool, and the error says so (``connection_invalidated``), as it would have."""
    driver = conn.connection.driver_connection
    dead = conn.dialect.is_disconnect(exc, driver, None)
    if dead:
        conn.invalidate(exc)
    error: StatementError = DBAPIError.instance(
        sql, values, exc, conn.dialect.loaded_dbapi.Error, connection_invalidated=dead
    )
    return error


def rows(
    conn: Connection,
    filters: Filters,
    after: Position,
    size: int,
    columns: tuple[Any, ...] = EVENT_COLUMNS,
) -> list[Any]:
    """The next ``size`` rows after ``after``, as tuples in ``columns`` order."""
    query = statement(shape_of(filters, after, True), columns)
    return _run(conn, query, values_of(filters, after, size))


def fetch(
    conn: Connection, filters: Filters, after: Position, want: int
) -> tuple[list[AuditEvent], bool]:
    """Up to ``want`` matching events after ``after``, and whether more follow."""
    keep = post_filter(filters)
    size = want + 1 if keep is None else max(4 * (want + 1), 500)
    out: list[AuditEvent] = []
    position = _start(conn, filters, after)
    if position is None:
        return out, False
    while True:
        found = rows(conn, filters, position, size)
        for row in found:
            event = to_event(row)
            if keep is None or keep(event):
                if len(out) == want:
                    return out, True
                out.append(event)
        if len(found) < size:
            return out, False
        position = position_of(filters, to_event(found[-1]))


def _start(conn: Connection, filters: Filters, after: Position) -> Position | None:
    """Where the query starts: ``after``, or (see query.needs_start) just before the first
    chain position from ``since`` on; None when no event matches at all."""
    if not needs_start(filters, after):
        return after
    values = start_values(filters)
    ((first, head, at),) = _run(conn, START_PROBE, values)
    if at is None:
        return None
    if head - at < at - first:
        ((first,),) = _run(conn, LOWEST_FROM, values)
    return Position(seq=int(first) - 1)


def stream(conn: Connection, filters: Filters, chunk: int = 2000) -> Iterator[AuditEvent]:
    """Every match, ``chunk`` rows at a time: memory stays flat however many there are."""
    keep = post_filter(filters)
    start = _start(conn, filters, Position())
    if start is None:
        return
    if conn.dialect.name == "postgresql":
        source = _server_side(conn, filters, start, chunk)
    else:
        source = _keyset(conn, filters, start, chunk)
    for row in source:
        event = to_event(row)
        if keep is None or keep(event):
            yield event


def _keyset(conn: Connection, filters: Filters, start: Position, chunk: int) -> Iterator[Any]:
    # SQLite: short queries one after the other, so no read is held open between chunks.
    position = start
    while True:
        found = rows(conn, filters, position, chunk)
        yield from found
        if len(found) < chunk:
            return
        position = position_of(filters, to_event(found[-1]))


def _server_side(conn: Connection, filters: Filters, start: Position, chunk: int) -> Iterator[Any]:
    values = values_of(filters, start, None)
    sql = _text(conn, statement(shape_of(filters, start, False)))
    driver: Any = conn.connection.driver_connection
    try:
        # A named cursor lives in a transaction; the reader's connections are in autocommit,
        # where transaction() issues BEGIN, and leaving it (even early) closes both.
        with driver.transaction():
            # Times decoded in UTC need no conversion per row (SET LOCAL: this transaction).
            driver.execute("SET LOCAL TIME ZONE 'UTC'")
            # Binary rows: UUIDs, times and integers decode without parsing text.
            with driver.cursor(name="auditledger_stream", binary=True) as cursor:
                cursor.itersize = chunk
                cursor.execute(sql, values)
                while found := cursor.fetchmany(chunk):
                    yield from found
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _wrapped(conn, sql, values, exc) from exc
