"""Reading and changing stored rows for erasure, on PostgreSQL and SQLite.

Only the statements differ between the two databases; what to erase is decided in
``erase.py``. Every change here is one the triggers allow (migration 0004, and 0008 for
version 2 events: each value goes with its own salt slot).
"""

from __future__ import annotations

import sqlite3
import uuid
from typing import Any

from sqlalchemy import Engine

from .._db.engine import make_engine
from .._db.urls import is_postgres, libpq_conninfo, normalise_url, resolve_url, sqlite_path

COLUMNS = (
    "user_id",
    "ip_address",
    "user_agent",
    "resource_id",
    "details",
    "previous_value",
    "new_value",
    "sanitised",
)


class RowStore:
    """One connection to the log, with the statements erasure needs."""

    def __init__(self, database_url: str | None) -> None:
        url = normalise_url(resolve_url(database_url))
        self.url = url
        self.postgres = is_postgres(url)
        self._pg: Any = None
        self._sqlite: sqlite3.Connection | None = None
        self._engine: Engine | None = None
        if self.postgres:
            import psycopg

            self._pg = psycopg.connect(
                libpq_conninfo(url), autocommit=True, application_name="auditledger-gdpr"
            )
        else:
            from .._db.sqlite import connect_sqlite

            self._sqlite = connect_sqlite(sqlite_path(url), timeout=30)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
        if self._pg is not None:
            self._pg.close()
        if self._sqlite is not None:
            self._sqlite.close()

    def url_text(self) -> str:
        return self.url.render_as_string(hide_password=False)

    @property
    def engine(self) -> Engine:
        """For reading, through the read side's query layer (what subject access reads)."""
        if self._engine is None:
            self._engine = make_engine(self.url_text())
        return self._engine

    def may_update(self) -> bool:
        """Whether this connection's role may UPDATE the log (the owner's may; the
        application's insert-only role may not)."""
        if not self.postgres:
            return True
        row = self._pg.execute(
            "SELECT has_table_privilege('audit_logs', 'UPDATE')"
            " AND has_table_privilege('audit_quarantine', 'UPDATE')"
        ).fetchone()
        return bool(row[0])

    # ---- erasing -------------------------------------------------------------------------

    def erase_rows(self, changes: list[tuple[uuid.UUID, frozenset[str], bytes | None]]) -> None:
        """Set the named columns of each event to NULL and store its new salt, in one
        transaction (the caller keeps batches small, so no lock is held for long)."""
        groups: dict[frozenset[str], list[tuple[bytes | None, uuid.UUID]]] = {}
        for event_id, erase, salt in changes:
            groups.setdefault(erase, []).append((salt, event_id))
        if self.postgres:
            with self._pg.transaction():
                for erase, items in groups.items():
                    # One set-based statement per set of columns, not one per event.
                    sets = ", ".join(f"{c} = NULL" for c in COLUMNS if c in erase)
                    self._pg.execute(
                        f"UPDATE audit_logs AS a SET {sets}, pii_salt = u.salt"
                        " FROM unnest(%s::uuid[], %s::bytea[]) AS u(id, salt) WHERE a.id = u.id",
                        ([event_id for _, event_id in items], [salt for salt, _ in items]),
                    )
            return
        assert self._sqlite is not None
        conn = self._sqlite
        conn.execute("BEGIN IMMEDIATE")
        try:
            for erase, items in groups.items():
                sets = ", ".join(f"{c} = NULL" for c in COLUMNS if c in erase)
                conn.executemany(
                    f"UPDATE audit_logs SET {sets}, pii_salt = ? WHERE id = ?",
                    [(salt, event_id.hex) for salt, event_id in items],
                )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def erase_quarantine(self, changes: list[tuple[uuid.UUID, str]]) -> None:
        if not changes:
            return
        if self.postgres:
            with self._pg.transaction():
                self._pg.cursor().executemany(
                    "UPDATE audit_quarantine SET payload = %s::jsonb WHERE id = %s",
                    [(payload, qid) for qid, payload in changes],
                )
            return
        assert self._sqlite is not None
        conn = self._sqlite
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "UPDATE audit_quarantine SET payload = ? WHERE id = ?",
                [(payload, qid.hex) for qid, payload in changes],
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
