"""Reading a log for the verifier: its rows ordered by chain then position (in the one row
layout, ``_db.rows``), its stored checkpoints and retention cuts, and the extent of each
chain. Ids come as canonical UUID text, JSON as text; from SQLite, the personal values come as
their commitments (computed with the row's salt) and ``created_at`` in Unix microseconds; from
PostgreSQL, as stored (see ``columns.check_pg_columns``).

PostgreSQL is read with psycopg alone (no SQLAlchemy: a fifth of a second less before the
first row), and a chain can be read by ranges of positions (``spans``) so that several
processes share one big chain.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC
from typing import Any

from ..._chain.canonical import commitment
from ..._chain.checkpoints import Checkpoint
from ..._chain.cuts import Cut
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
from ..._db.urls import plain_postgres_conninfo, resolve_url
from ..._errors import MissingExtraError

# A row read for verifying: AUDIT_LOG_COLUMNS then CHAIN_COLUMNS.
VerifyRow = tuple[Any, ...]
# A share of the log for one verifying process: chain ids (text), and whether it also takes
# the rows that belong to no chain.
Part = tuple[list[str], bool]
# A chain's extent, from its index alone: (chain id text or None for rows in no chain, first
# position, last position, rows: exact for None, else last - first + 1, what a whole chain has).
Extent = tuple[str | None, int | None, int | None, int]
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
# Each chain's first and last position, walking the chain index from one chain to the next
# (a probe per chain, not a scan of the log), and how many rows belong to no chain.
_PG_EXTENTS = """
WITH RECURSIVE chains(id) AS (
    (SELECT chain_id FROM audit_logs WHERE chain_id IS NOT NULL ORDER BY chain_id LIMIT 1)
  UNION ALL
    SELECT (SELECT a.chain_id FROM audit_logs a WHERE a.chain_id > chains.id
            ORDER BY a.chain_id LIMIT 1)
    FROM chains WHERE chains.id IS NOT NULL
)
SELECT id::text,
       (SELECT min(chain_seq) FROM audit_logs WHERE chain_id = chains.id),
       (SELECT max(chain_seq) FROM audit_logs WHERE chain_id = chains.id),
       NULL::int8
FROM chains WHERE id IS NOT NULL
UNION ALL
SELECT NULL, NULL, NULL, count(*) FROM audit_logs WHERE chain_id IS NULL
"""
_PG_CHECKPOINTS = (
    "SELECT id, created_at, key_id, body, signature FROM audit_checkpoints ORDER BY created_at"
)
_PG_CUTS = (
    "SELECT id, chain_id, first_seq, previous_hash, expired_before, created_at, key_id, body,"
    " signature FROM audit_cuts ORDER BY created_at"
)


class Source:
    """Rows ordered by chain then position, and the stored checkpoints, from one database."""

    def __init__(self, database_url: str | None, snapshot: str | None = None) -> None:
        self._conninfo = plain_postgres_conninfo(database_url)
        self.postgres = self._conninfo is not None
        self._text = self._conninfo or resolve_url(database_url)
        self._extents: list[Extent] | None = None
        # A PostgreSQL snapshot every read of this source is made in (see shared_snapshot).
        self.snapshot = snapshot

    def url_text(self) -> str:
        return self._text

    def _connect(self) -> Any:
        try:
            import psycopg
        except ImportError as exc:
            raise MissingExtraError("postgres", "psycopg") from exc

        conn = psycopg.connect(self._conninfo or "", application_name="auditledger-verify")
        conn.read_only = True
        if self.snapshot is not None:
            from psycopg import sql

            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(self.snapshot)))
        return conn

    @contextmanager
    def shared_snapshot(self) -> Iterator[str]:
        """While open, this source's reads, and those of every ``Source(url, snapshot)``
        given the id it yields, see the database as it was at this moment: processes walking
        ranges of one chain then agree on it whatever is written (or expired) meanwhile."""
        import psycopg

        with self._connect() as holder:
            holder.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            exported = holder.execute("SELECT pg_export_snapshot()").fetchone()
            self.snapshot = str(exported[0])
            try:
                yield self.snapshot
            finally:
                self.snapshot = None

    def extents(self) -> list[Extent]:
        """Every chain's first and last position (PostgreSQL only), read once."""
        if self._extents is None:
            with self._connect() as conn:
                self._extents = [
                    (r[0], r[1], r[2], int(r[3]) if r[0] is None else _rows_between(r[1], r[2]))
                    for r in conn.execute(_PG_EXTENTS)
                ]
        return self._extents

    def chain_sizes(self) -> list[tuple[str | None, int]]:
        """Rows per chain (None: rows in no chain), from the chain index alone; a chain's
        count is its span of positions (rows missing from it make it an estimate)."""
        return [(chain, size) for chain, _, _, size in self.extents() if size]

    def count(self) -> int:
        """How many rows there are (for a progress bar: PostgreSQL's is an estimate)."""
        if self.postgres:
            return sum(size for *_, size in self.extents())
        return int(self._sqlite_one("SELECT count(*) FROM audit_logs")[0][0] or 0)

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
        from psycopg import sql

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
        yield from self._pg_stream(wheres, in_order=workspace is None, chunked=chunked)

    def range_rows(self, chain: str, first: int | None, last: int | None) -> Iterator[VerifyRow]:
        """One chain's rows at positions ``first``..``last`` (None: open), in order; the
        range that runs to the end also takes the chain's rows without a position."""
        from psycopg import sql

        where = sql.SQL(" WHERE chain_id = {0}::uuid").format(sql.Literal(chain))
        if first is not None:
            where += sql.SQL(" AND chain_seq >= {0}").format(sql.Literal(first))
        if last is not None:
            where += sql.SQL(" AND chain_seq <= {0}").format(sql.Literal(last))
        wheres = [where]
        if last is None:  # separately: an OR would leave the index's order (see _pg_rows)
            wheres.append(
                sql.SQL(" WHERE chain_id = {0}::uuid AND chain_seq IS NULL").format(
                    sql.Literal(chain)
                )
            )
        yield from self._pg_stream(wheres, in_order=True)

    def before(self, chain: str, floor: int, first: int) -> list[VerifyRow]:
        """The (at most two) linked rows of a chain just before position ``first``, from
        ``floor`` on, oldest first: what a walk starting at ``first`` continues from."""
        from psycopg import sql

        where = sql.SQL(
            " WHERE chain_id = {0}::uuid AND chain_seq >= {1} AND chain_seq < {2}"
            " AND chain_hash IS NOT NULL AND canonical IS NOT NULL"
            " ORDER BY audit_logs.chain_id DESC, audit_logs.chain_seq DESC LIMIT 2"
        ).format(sql.Literal(chain), sql.Literal(floor), sql.Literal(first))
        return list(reversed(list(self._pg_stream([where], in_order=None))))

    def _pg_stream(
        self, wheres: Sequence[Any], *, in_order: bool | None, chunked: bool | None = None
    ) -> Iterator[VerifyRow]:
        import psycopg
        from psycopg import sql
        from psycopg.types.numeric import Int8BinaryLoader

        # The qualified ORDER BY uses the chain index (the output column chain_id is text and
        # would sort instead).
        order = sql.SQL(" ORDER BY audit_logs.chain_id, audit_logs.chain_seq")
        queries = [
            sql.SQL("{}{}{}").format(
                sql.SQL(_PG_SELECT), where, order if in_order is not None else sql.SQL("")
            )
            for where in wheres
        ]
        with self._connect() as conn:
            if in_order:
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
        from ..._db.urls import normalise_url, sqlite_path

        conn = connect_sqlite(sqlite_path(normalise_url(self._text)), timeout=10)
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
        if not self.postgres:
            return self._sqlite_checkpoints()
        with self._connect() as conn:
            return [
                Checkpoint(r[0], r[1].astimezone(UTC), r[2], bytes(r[3]), bytes(r[4]))
                for r in conn.execute(_PG_CHECKPOINTS)
            ]

    def pg_fetch(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of one query on PostgreSQL, through psycopg alone (verify's start-up)."""
        with self._connect() as conn:
            return list(conn.execute(query, params))

    def cuts(self) -> list[Cut]:
        """Every stored retention cut, oldest first."""
        if not self.postgres:
            from ..._chain.cuts import read_cuts

            return read_cuts(self._text)
        with self._connect() as conn:
            return [_cut(r) for r in conn.execute(_PG_CUTS)]

    def _sqlite_checkpoints(self) -> list[Checkpoint]:
        from sqlalchemy import select

        from ..._db.engine import make_engine
        from ..._db.schema import audit_checkpoints

        engine = make_engine(self._text)
        try:
            with engine.connect() as conn:
                query = select(audit_checkpoints).order_by(audit_checkpoints.c.created_at)
                return [
                    Checkpoint(r.id, r.created_at, r.key_id, bytes(r.body), bytes(r.signature))
                    for r in conn.execute(query)
                ]
        finally:
            engine.dispose()

    def _sqlite_one(self, query: str) -> list[Any]:
        from ..._db.sqlite import connect_sqlite
        from ..._db.urls import normalise_url, sqlite_path

        conn = connect_sqlite(sqlite_path(normalise_url(self._text)), timeout=10)
        try:
            return list(conn.execute(query))
        finally:
            conn.close()


def _cut(r: Any) -> Cut:
    previous = None if r[3] is None else bytes(r[3])
    expired, created = r[4].astimezone(UTC), r[5].astimezone(UTC)
    return Cut(r[0], r[1], r[2], previous, expired, created, r[6], bytes(r[7]), bytes(r[8]))


def _rows_between(first: int | None, last: int | None) -> int:
    return 0 if first is None or last is None else max(0, last - first + 1)


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
