"""JSONL lines straight from PostgreSQL's text forms: the export's fast path.

Decoding every jsonb into Python objects and encoding it again cost more than everything else
an export does. Here PostgreSQL sends each value as text (jsonb as its stored JSON text, the
time already in the export's ISO form) and the lines are assembled around those texts.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
from sqlalchemy import Connection, Text, cast, func, literal

from .._db.schema import audit_logs
from .cursor import Position
from .filters import Filters
from .query import build, ip_in

c = audit_logs.c
_ISO = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'
TEXT_COLUMNS = (
    cast(c.id, Text),
    c.user_id,
    cast(c.workspace_id, Text),
    c.ip_address,
    c.user_agent,
    c.action,
    c.resource,
    c.resource_id,
    cast(c.details, Text),
    cast(c.previous_value, Text),
    cast(c.new_value, Text),
    func.to_char(func.timezone(literal("UTC"), c.created_at), literal(_ISO)),
    cast(c.sanitised, Text),
    c.chain_seq,
)


def jsonl_lines(conn: Connection, filters: Filters, chunk: int = 2000) -> Iterator[bytes]:
    """The lines ``export --format jsonl`` writes, from a PostgreSQL connection.

    One query, streamed in chunks (libpq's chunked mode where available, else row by row):
    the server produces the next rows while these are encoded, and memory stays flat."""
    import psycopg

    fragment, dumps, newline = orjson.Fragment, orjson.dumps, orjson.OPT_APPEND_NEWLINE
    network = filters.ip
    compiled = build(filters, Position(), None, TEXT_COLUMNS).compile(dialect=conn.dialect)
    # The values need no bind processing: ids are UUIDs and times aware (Filters made sure),
    # both of which psycopg sends as they are.
    params = compiled.params
    raw = conn.connection.driver_connection
    size = chunk if psycopg.capabilities.has_stream_chunked() else 1
    cursor = raw.cursor()  # type: ignore[union-attr]
    for r in cursor.stream(str(compiled), params, size=size):
        if network is not None and not ip_in(network, r[3]):
            continue
        yield dumps(
            {
                "id": r[0], "user_id": r[1], "workspace_id": r[2], "ip_address": r[3],
                "user_agent": r[4], "action": r[5], "resource": r[6], "resource_id": r[7],
                "details": None if r[8] is None else fragment(r[8]),
                "previous_value": None if r[9] is None else fragment(r[9]),
                "new_value": None if r[10] is None else fragment(r[10]),
                "created_at": r[11],
                "sanitised": None if r[12] is None else fragment(r[12]),
                "seq": r[13],
            },
            option=newline,
        )  # fmt: skip
