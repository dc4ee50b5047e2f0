"""Reading a log for the verifier: its rows ordered by chain then position (in the one row
layout, ``_db.rows``), and its stored checkpoints. Ids come as canonical UUID text, JSON as
text; from SQLite, the personal values come as their commitments (computed with the row's
salt) and ``created_at`` in Unix microseconds; from PostgreSQL, as stored (see
``columns.check_pg_columns``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from ..._chain.canonical import commitment
from ..._chain.checkpoints import Checkpoint
from ..._db.engine import make_engine
from ..._db.rows import (
    ROW_CANONICAL,
    ROW_CHAIN,
    ROW_CREATED,
    ROW_ID,
    ROW_IP,
    ROW_SALT,
    ROW_UA,
    ROW_USER,
    ROW_WORKSPACE,
)
from ..._db.urls import is_postgres, libpq_conninfo, normalise_url, resolve_url, sqlite_path

# A row read for verifying: AUDIT_LOG_COLUMNS then CHAIN_COLUMNS.
VerifyRow = tuple[Any, ...]
# A share of the log for one verifying process: chain ids (text), and whether it also takes
# the rows that belong to no chain.
Part = tuple[list[str], bool]
_PERSONAL_ROW = {"user_id": ROW_USER, "ip_address": ROW_IP, "user_agent": ROW_UA}


# ---- reading -------------------------------------------------------------------------------


_PG_SELECT = (
    "SELECT id::text, user_id, workspace_id::text, ip_address, user_agent, action, resource,"
    " resource_id, details::text, previous_value::text, new_value::text,"
    " created_at, sanitised::text, chain_id::text,"
    " chain_seq, chain_hash, canonical, pii_salt FROM audit_logs"
)
_PG_TYPES = ["text"] * 11 + ["timestamptz", "text", "text", "int8", "bytea", "bytea", "bytea"]
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 (PostgreSQL's epoch) in Unix microseconds
_CHUNK = 1_000
_SQLITE_SELECT = (
    "SELECT id, user_id, workspace_id, ip_address, user_agent, action, resource, resource_id,"
    " details, previous_value, new_value, created_at, sanitised, chain_id, chain_seq,"
    " chain_hash, canonical, pii_salt FROM audit_logs"
)


class Source:
    """Rows ordered by chain then position, and the stored checkpoints, from one database."""

    def __init__(self, database_url: str | None) -> None:
        url = normalise_url(resolve_url(database_url))
        self.postgres = is_postgres(url)
        self._url = url

    def url_text(self) -> str:
        return self._url.render_as_string(hide_password=False)

    def chain_sizes(self) -> list[tuple[str | None, int]]:
        """Rows per chain (None: rows in no chain), from the chain index alone."""
        import psycopg

        with psycopg.connect(libpq_conninfo(self._url)) as conn:
            conn.read_only = True
            cur = conn.execute("SELECT chain_id::text, count(*) FROM audit_logs GROUP BY 1")
            return [(r[0], int(r[1])) for r in cur]

    def count(self) -> int:
        engine = make_engine(self._url.render_as_string(hide_password=False))
        try:
            with engine.connect() as conn:
                from sqlalchemy import text

                if self.postgres:
                    # An estimate is enough for a progress bar, and costs no scan.
                    query = "SELECT reltuples::int8 FROM pg_class WHERE relname = 'audit_logs'"
                else:
                    query = "SELECT count(*) FROM audit_logs"
                return max(0, int(conn.execute(text(query)).scalar() or 0))
        finally:
            engine.dispose()

    def rows(self, workspace: uuid.UUID | None, part: Part | None = None) -> Iterator[VerifyRow]:
        if self.postgres:
            yield from self._pg_rows(workspace, part=part)
        else:
            yield from self._sqlite_rows(workspace)

    def _pg_rows(
        self, workspace: uuid.UUID | None, chunked: bool | None = None, part: Part | None = None
    ) -> Iterator[VerifyRow]:
        """Rows as PostgreSQL stores them: personal values in clear, ``created_at`` as
        microseconds since 2000-01-01 (see ``check_pg_columns``, which compares them).
        ``chunked``: stream rows in chunks (libpq >= 17; the default where available) rather
        than with COPY. ``part``: only these chains (and, with its flag, unchained rows)."""
        import psycopg
        from psycopg import sql
        from psycopg.types.numeric import Int8BinaryLoader

        wheres: list[sql.Composable] = [sql.SQL("")]
        if workspace is not None:
            wheres = [
                sql.SQL(" WHERE chain_id = {0} OR workspace_id = {0}").format(
                    sql.Literal(str(workspace))
                )
            ]
        elif part is not None:
            chains, unchained = part
            # Two queries rather than one with OR: the OR would take the rows out of the
            # chain index's order, and PostgreSQL would sort them all.
            wheres = [sql.SQL(" WHERE chain_id = ANY({0}::uuid[])").format(sql.Literal(chains))]
            if unchained:
                wheres.append(sql.SQL(" WHERE chain_id IS NULL"))
        # The qualified ORDER BY uses the chain index (the output column chain_id is text and
        # would sort instead).
        queries = [
            sql.SQL("{}{} ORDER BY audit_logs.chain_id, audit_logs.chain_seq").format(
                sql.SQL(_PG_SELECT), where
            )
            for where in wheres
        ]
        conninfo = libpq_conninfo(self._url)
        with psycopg.connect(conninfo, application_name="auditledger-verify") as conn:
            conn.read_only = True
            if workspace is None:
                # The log (or a share of its chains) in the chain index's order, read as it
                # comes. Left to itself, the planner picks a (parallel) scan and a sort of
                # everything first whenever its statistics are stale or the query names a
                # share: measured, 40% slower on 200,000 events just written. Not for one
                # workspace, which is best found through a bitmap and sorted.
                conn.execute("SET enable_sort = off; SET max_parallel_workers_per_gather = 0")
            # A timestamptz in binary is its int8 of microseconds since 2000-01-01 UTC: exact,
            # and free for the server to send (extract(epoch ...) computes in numeric).
            conn.adapters.register_loader("timestamptz", Int8BinaryLoader)
            if chunked is None:
                chunked = psycopg.capabilities.has_stream_chunked()
            for query in queries:
                if chunked:
                    # Rows in chunks, each parsed in one call: no per-row round trip through
                    # Python as COPY has, and the server keeps sending while we work.
                    yield from conn.cursor().stream(query, binary=True, size=_CHUNK)
                else:  # libpq < 17
                    copy_query = sql.SQL("COPY ({}) TO STDOUT (FORMAT BINARY)").format(query)
                    with conn.cursor().copy(copy_query) as copy:
                        copy.set_types(_PG_TYPES)
                        yield from copy.rows()

    def _sqlite_rows(self, workspace: uuid.UUID | None) -> Iterator[VerifyRow]:
        from datetime import UTC, datetime

        from ..._chain.canonical import micros
        from ..._db.sqlite import connect_sqlite

        conn = connect_sqlite(sqlite_path(self._url), timeout=10)
        try:
            where, params = "", ()
            if workspace is not None:
                where = " WHERE chain_id = ? OR workspace_id = ?"
                params = (workspace.hex, workspace.hex)  # type: ignore[assignment]
            cur = conn.execute(f"{_SQLITE_SELECT}{where}", params)
            for r in cur:
                row = list(r)
                for i in (ROW_ID, ROW_WORKSPACE, ROW_CHAIN):
                    if row[i] is not None:
                        row[i] = _sqlite_uuid_text(row[i])
                row[ROW_CREATED] = _sqlite_micros(row[ROW_CREATED], datetime, UTC, micros)
                salt = row[ROW_SALT] or b""
                if row[ROW_CANONICAL] is not None and row[ROW_CANONICAL][:3] == b"[2,":
                    yield tuple(row)  # version 2 commits each value with its own salt
                    continue
                for name, index in _PERSONAL_ROW.items():
                    if row[index] is not None:
                        row[index] = commitment(salt, name, row[index])
                yield tuple(row)
        finally:
            conn.close()

    def checkpoints(self) -> list[Checkpoint]:
        from sqlalchemy import select

        from ..._db.schema import audit_checkpoints

        engine = make_engine(self._url.render_as_string(hide_password=False))
        try:
            with engine.connect() as conn:
                query = select(audit_checkpoints).order_by(audit_checkpoints.c.created_at)
                return [
                    Checkpoint(r.id, r.created_at, r.key_id, bytes(r.body), bytes(r.signature))
                    for r in conn.execute(query)
                ]
        finally:
            engine.dispose()


# The writer stores ids on SQLite as 32 lowercase hex digits and times in one fixed format.
# Anything else was written by someone else; read leniently (uuid.UUID accepts upper case,
# braces, "urn:uuid:"; fromisoformat accepts an offset) it would still "match" what was hashed
# while the application sees another value.
_SQLITE_SPELLING = uuid.UUID("5b2f6c1e-8d1a-4c7e-9a53-0f7d2b6e4c11")


def _sqlite_uuid_text(value: object) -> str:
    text = str(value)
    if len(text) == 32 and all(c in "0123456789abcdef" for c in text):
        return str(uuid.UUID(hex=text))
    return str(uuid.uuid5(_SQLITE_SPELLING, text))  # parseable, and never what was hashed


def _sqlite_micros(value: object, datetime: Any, utc: Any, micros: Any) -> int:
    try:
        parsed = datetime.strptime(str(value), "%Y-%m-%d %H:%M:%S.%f")
    except ValueError:
        return -1  # not what the writer stores: reported as a changed created_at
    return int(micros(parsed.replace(tzinfo=utc)))
