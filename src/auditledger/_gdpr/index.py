"""The opt-in subject index (``auditledger gdpr index``): fast subject access and erasure on
PostgreSQL, paid for by every write.

Without it, finding a person's events reads every row's JSON values: a person may be named
anywhere in them. With it, PostgreSQL finds them through a trigram index on those values'
text (``pg_trgm``: every 3-character piece, which is also why ids must be at least 3
characters), plus a b-tree on ``resource_id`` (``user_id`` has one already). Each stored
event then adds a few dozen trigram entries, so writers slow down: opt in where subject
requests must be answered quickly, leave it off where raw write throughput matters more.

The indexes are built with CREATE INDEX CONCURRENTLY, so applications keep logging while it
runs; one left invalid by an interrupted build is dropped and built again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._db.urls import is_postgres, libpq_conninfo, normalise_url, resolve_url
from .._read.subject import SUBJECT_TEXT_PG
from .erase import ErasureError

# name -> what follows ON audit_logs in CREATE INDEX
INDEXES = {
    "audit_logs_subject_text_idx": f"USING gin ({SUBJECT_TEXT_PG} gin_trgm_ops)",
    "audit_logs_resource_id_idx": "(resource_id)",
}


@dataclass(frozen=True)
class IndexState:
    name: str
    exists: bool
    valid: bool
    size_bytes: int


def _connect(database_url: str | None) -> Any:
    url = normalise_url(resolve_url(database_url))
    if not is_postgres(url):
        raise ErasureError(
            "the subject index is for PostgreSQL (pg_trgm); on SQLite subject access reads"
            " every row"
        )
    import psycopg

    return psycopg.connect(
        libpq_conninfo(url), autocommit=True, application_name="auditledger-gdpr-index"
    )


def index_state(database_url: str | None) -> list[IndexState]:
    with _connect(database_url) as conn:
        return _state(conn)


def _state(conn: Any) -> list[IndexState]:
    rows = conn.execute(
        "SELECT c.relname, i.indisvalid, pg_relation_size(c.oid) FROM pg_class c"
        " JOIN pg_index i ON i.indexrelid = c.oid WHERE c.relname = ANY(%s)",
        (list(INDEXES),),
    ).fetchall()
    found = {r[0]: (bool(r[1]), int(r[2])) for r in rows}
    return [
        IndexState(name, name in found, found.get(name, (False, 0))[0], found.get(name, (0, 0))[1])
        for name in INDEXES
    ]


def create_subject_index(database_url: str | None) -> list[IndexState]:
    """Build the indexes that are missing (minutes on a large log; writers keep writing)."""
    with _connect(database_url) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        for state in _state(conn):
            if state.exists and state.valid:
                continue
            if state.exists:
                conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {state.name}")
            conn.execute(
                f"CREATE INDEX CONCURRENTLY {state.name} ON audit_logs {INDEXES[state.name]}"
            )
        conn.execute("ANALYZE audit_logs")
        return _state(conn)


def drop_subject_index(database_url: str | None) -> list[IndexState]:
    with _connect(database_url) as conn:
        for name in INDEXES:
            conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        return _state(conn)
