"""SQLAlchemy engines for migrations and reading (the writer uses its own connections)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL

from .._errors import MissingExtraError
from .urls import is_postgres, normalise_url, resolve_url


def make_engine(database_url: str | None, *, isolation_level: str | None = None) -> Engine:
    """``isolation_level``: set once on every new connection (readers take "AUTOCOMMIT")."""
    url: URL = normalise_url(resolve_url(database_url))
    options: dict[str, Any] = (
        {} if isolation_level is None else {"isolation_level": isolation_level}
    )
    if is_postgres(url):
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise MissingExtraError("postgres", "psycopg") from exc
        return create_engine(url, pool_pre_ping=True, **options)
    engine = create_engine(url, **options)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        # SQLite leaves foreign keys off unless every connection turns them on.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
        # SQLite's lower() folds ASCII only: "ÉCOLE" would not match --text école, as it does
        # on PostgreSQL. Python's lower() is the one the search pattern is folded with.
        dbapi_connection.create_function("lower", 1, _lower, deterministic=True)

    return engine


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value
