"""The sink for a database URL: the one place that picks PostgreSQL or SQLite."""

from __future__ import annotations

import os
from collections.abc import Callable

from sqlalchemy.engine import URL

from .._db.urls import is_postgres, libpq_conninfo, sqlite_path
from .base import Sink


def sink_factory(url: URL, timeout: float) -> Callable[[], Sink]:
    """A function making a new sink for ``url`` (connecting lazily). Raises
    ``MissingExtraError`` at once when the PostgreSQL driver is not installed."""
    if is_postgres(url):
        from .postgres import PostgresSink

        conninfo = libpq_conninfo(url)

        def postgres() -> Sink:
            return PostgresSink(conninfo, connect_timeout=timeout)

        return postgres
    from .sqlite import SqliteSink

    path = os.path.abspath(sqlite_path(url))

    def sqlite() -> Sink:
        return SqliteSink(path, timeout=timeout)

    return sqlite
