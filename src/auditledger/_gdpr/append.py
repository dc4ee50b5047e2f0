"""Appending the log's own records (gdpr.erasure, retention.applied) through a chain writer.

They go through the same sink as every event, so they take the chain locks, are linked at the
chain's head and sealed in the current canonical form like any other event.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from sqlalchemy.engine import URL

from .._chain.canonical import NO_WORKSPACE
from .._db.rows import Row
from .._db.urls import is_postgres, libpq_conninfo, sqlite_path
from .._ids import uuid7_batch
from .._write.prepare import datetime_from_ns


def record_rows(
    action: str, actor: str | None, per_chain: dict[uuid.UUID, dict[str, Any]]
) -> list[Row]:
    """One event per chain, ``details`` as given (JSON with sorted keys)."""
    now = time.time_ns()
    chains = sorted(per_chain, key=str)
    ids = uuid7_batch([now] * len(chains))
    return [
        (
            event_id,
            actor,
            None if chain == NO_WORKSPACE else chain,
            None,
            None,
            action,
            action.split(".", 1)[0],
            None,
            orjson.dumps(per_chain[chain], option=orjson.OPT_SORT_KEYS).decode(),
            None,
            None,
            datetime_from_ns(now),
            None,
        )
        for event_id, chain in zip(ids, chains, strict=True)
    ]


def append(url: URL, rows: list[Row]) -> list[uuid.UUID]:
    if not rows:
        return []
    sink: Any
    if is_postgres(url):
        from .._sinks.postgres import PostgresSink

        sink = PostgresSink(libpq_conninfo(url), connect_timeout=30)
    else:
        from .._sinks.sqlite import SqliteSink

        sink = SqliteSink(sqlite_path(url), timeout=30)
    try:
        sink.write(rows, [], replay=False)
    finally:
        sink.close()
    return [row[0] for row in rows]
