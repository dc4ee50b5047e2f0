"""The PostgreSQL sink: one transaction per batch, rows written with binary COPY."""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from .._chain.canonical import CHAIN_COLUMNS, Sealed, seal
from .._chain.checkpoints import Checkpoint, Signer, make_checkpoint
from .._chain.links import grouped_by_chain, link_each, lock_keys
from .._db.rows import QuarantineRow, Row
from .._db.schema import AUDIT_LOG_COLUMNS
from .._errors import MissingExtraError
from .._events import WorkspaceRef
from .base import ErrorKind, Sink, SinkError

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.adapt import AdaptersMap, Dumper
    from psycopg.pq import Format
    from psycopg.types.string import BytesBinaryDumper
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("postgres", "psycopg") from exc

# After the check above: a missing psycopg is reported as the missing "postgres" extra.
from .copy_end import EndEarlyWriter

_COLUMNS = ", ".join(AUDIT_LOG_COLUMNS + CHAIN_COLUMNS)
_COPY_SQL = f"COPY audit_logs ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_COPY_TYPES = [
    "uuid", "text", "uuid", "text", "text", "text", "text", "text",
    "jsonb", "jsonb", "jsonb", "timestamptz", "jsonb",
    "uuid", "int8", "bytea", "bytea", "bytea",
]  # fmt: skip

# First key of auditledger's advisory locks ("audt"), so they never collide with an
# application's single-key advisory locks on the same database.
_LOCK_CLASS = 0x61756474
_LOCK_SQL = "SELECT pg_advisory_xact_lock(%s, k) FROM unnest(%s::int4[]) AS k"
# A statement of its own after the locks: in READ COMMITTED its snapshot is taken once they
# are granted, so it sees the rows the previous holder committed. (Reading the head with
# "ORDER BY seq DESC LIMIT 1 FOR UPDATE" instead does not serialise appends.)
_HEADS_OF_SQL = (
    "SELECT c.id, h.chain_seq, h.chain_hash FROM unnest(%s::uuid[]) AS c(id)"
    " CROSS JOIN LATERAL (SELECT chain_seq, chain_hash FROM audit_logs"
    " WHERE chain_id = c.id ORDER BY chain_seq DESC LIMIT 1) AS h"
)
ALL_HEADS_SQL = (
    "SELECT c.id, h.chain_seq, h.chain_hash FROM"
    " (SELECT id FROM workspaces UNION ALL"
    " SELECT '00000000-0000-0000-0000-000000000000'::uuid) AS c(id)"
    " CROSS JOIN LATERAL (SELECT chain_seq, chain_hash FROM audit_logs"
    " WHERE chain_id = c.id ORDER BY chain_seq DESC LIMIT 1) AS h"
)

# Waiting this much longer for the chains' advisory locks than for a plain round trip means
# another writer holds them.
_CONTENDED = 0.005

# SQLSTATE classes and codes that no retry will cure.
_PERMANENT_CLASSES = ("28", "3D", "42", "0A")
_PERMANENT_MESSAGES = ("password authentication failed", "does not exist", "no pg_hba.conf")


class _RawJson:
    """Marker type: the jsonb dumper below is registered through it."""


class _RawJsonbBinaryDumper(Dumper):
    """Takes JSON text already serialised by the writer: jsonb's binary format is 0x01 + text.

    psycopg's own jsonb dumper would serialise Python objects again with the json module, the
    slowest step of a batch.
    """

    format = Format.BINARY

    def dump(self, obj: Any) -> bytes:
        return b"\x01" + obj.encode()  # type: ignore[no-any-return]


def register_copy_dumpers(adapters: AdaptersMap, jsonb_oid: int) -> None:
    """The dumpers of the writer's COPY: JSON text as jsonb (above), and bytes as bytea in C.
    (psycopg.dbapi20 maps bytea to its ``Binary`` wrapper's dumper, written in Python: with
    three bytea columns a row, formatting took 3.6 µs a row instead of 1.6.)"""
    adapters.register_dumper(
        _RawJson, type("RawJsonbDumper", (_RawJsonbBinaryDumper,), {"oid": jsonb_oid})
    )
    adapters.register_dumper(bytes, BytesBinaryDumper)


class PostgresSink(Sink):
    def __init__(self, conninfo: str, *, connect_timeout: float) -> None:
        super().__init__()
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        conn = psycopg.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=max(2, int(self._connect_timeout)),
            application_name="auditledger-writer",
        )
        # Visible to abort() from here on, so the deadline also covers the set-up queries.
        self._conn = conn
        try:
            self._set_up(conn)
        except BaseException:
            self._conn = None
            conn.close()
            raise
        return conn

    def _set_up(self, conn: psycopg.Connection[Any]) -> None:
        jsonb = psycopg.types.TypeInfo.fetch(conn, "jsonb")
        assert jsonb is not None
        register_copy_dumpers(conn.adapters, jsonb.oid)
        # Chains need READ COMMITTED (see _HEADS_OF_SQL) whatever the server's default; the
        # timeouts end a wait on a stuck writer's chain lock, and free the locks of a writer
        # that hangs inside a transaction, before the client-side deadline gives up.
        timeout_ms = max(1000, int(self._connect_timeout * 1000))
        conn.execute(
            "SELECT set_config('default_transaction_isolation', 'read committed', false),"
            " set_config('lock_timeout', %s, false),"
            " set_config('idle_in_transaction_session_timeout', %s, false)",
            (str(timeout_ms * 4 // 5), str(timeout_ms)),
        )

    def write(
        self,
        rows: list[Row],
        quarantined: list[QuarantineRow],
        *,
        replay: bool,
        sealed: list[Sealed] | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> tuple[int, int]:
        with self._mapped_errors():
            conn = self._connection()
            with conn.transaction():
                if replay:
                    rows, quarantined, sealed = self.drop_stored(rows, quarantined, sealed)
                if sealed is None:
                    rows = self.resolve_workspaces(rows)
                else:
                    self.forget_unresolved()
                cur = conn.cursor()
                if rows:
                    sealed = seal(rows) if sealed is None else sealed
                    rows, sealed = grouped_by_chain(rows, sealed)
                    chains = {s[0] for s in sealed}
                    asked = time.monotonic()
                    cur.execute(_LOCK_SQL, (_LOCK_CLASS, lock_keys(chains)))
                    locked = time.monotonic()
                    cur.execute(_HEADS_OF_SQL, (list(chains),))
                    # The lock statement took longer than this one round trip: it waited.
                    contended = (locked - asked) - (time.monotonic() - locked) > _CONTENDED
                    heads = {r[0]: (r[1], r[2]) for r in cur}
                    # Linked row by row as COPY sends them: the server starts sooner.
                    links = link_each(sealed, heads)
                    # The server works through the rows as they arrive, then (once the COPY
                    # has ended) checks their foreign keys, while the writer prepares the
                    # next batch (EndEarlyWriter). Not when other writers wait for these
                    # chains (the locks took a while): they would wait for our preparation
                    # too (4 processes on one chain measured 12-16% slower), so it runs
                    # after the commit instead.
                    early = meanwhile is not None and not contended
                    writer = EndEarlyWriter(cur, meanwhile) if meanwhile and early else None
                    with cur.copy(_COPY_SQL, writer=writer) as copy:
                        copy.set_types(_COPY_TYPES)
                        for row, chained in zip(rows, links, strict=True):
                            copy.write_row(row + chained)
                if quarantined:
                    cur.executemany(
                        "INSERT INTO audit_quarantine (id, reason, payload, created_at)"
                        " VALUES (%s, %s, %s::text::jsonb, %s)",
                        [(q[0], q[1], q[2].decode(), q[3]) for q in quarantined],
                    )
            self.workspaces_committed()
            return len(rows), len(quarantined)

    def write_checkpoint(self, signer: Signer) -> Checkpoint:
        with self._mapped_errors():
            conn = self._connection()
            with conn.transaction():
                heads = [(r[0], r[1], r[2]) for r in conn.execute(ALL_HEADS_SQL)]
                checkpoint = make_checkpoint(signer, heads, time.time_ns())
                conn.execute(
                    "INSERT INTO audit_checkpoints (id, created_at, key_id, body, signature)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (
                        checkpoint.id,
                        checkpoint.created_at,
                        checkpoint.key_id,
                        checkpoint.body,
                        checkpoint.signature,
                    ),
                )
            return checkpoint

    @contextlib.contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        """Driver and socket errors as SinkError, dropping a connection they broke."""
        try:
            yield
        except psycopg.Error as exc:
            self._drop_broken_connection()
            raise SinkError(classify(exc), _code(exc)) from exc
        except OSError as exc:
            self._drop_broken_connection()
            raise SinkError(ErrorKind.TRANSIENT, type(exc).__name__) from exc

    def abort(self) -> None:
        conn = self._conn
        if conn is None or conn.closed:
            return
        # Shutting the socket down makes the blocked libpq call fail at once; closing the
        # psycopg connection from this thread would race with the writer using it.
        try:
            sock = socket.socket(fileno=os.dup(conn.fileno()))
        except (OSError, psycopg.Error):
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            sock.close()

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def _drop_broken_connection(self) -> None:
        conn = self._conn
        if conn is not None and (conn.closed or conn.broken or conn.info.transaction_status != 0):
            self.close()

    def _existing_workspaces(self, ids: list[uuid.UUID]) -> set[uuid.UUID]:
        assert self._conn is not None
        cur = self._conn.execute("SELECT id FROM workspaces WHERE id = ANY(%s)", (ids,))
        return {r[0] for r in cur}

    def _ensure_workspaces(self, refs: list[WorkspaceRef]) -> dict[str, uuid.UUID]:
        assert self._conn is not None
        cur = self._conn.cursor()
        plain = [r for r in refs if not r.refreshes]
        if plain:
            cur.executemany(
                "INSERT INTO workspaces (id, team_id, enterprise_id, name) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (team_id) DO NOTHING",
                [(uuid.uuid4(), r.key, r.enterprise_id, r.name) for r in plain],
            )
        refreshes = [r for r in refs if r.refreshes]
        if refreshes:
            cur.executemany(_REFRESH_WORKSPACE, [_refresh_params(r) for r in refreshes])
        keys = [r.key for r in refs]
        cur.execute("SELECT team_id, id FROM workspaces WHERE team_id = ANY(%s)", (keys,))
        return {r[0]: r[1] for r in cur}

    def _existing_event_ids(self, ids: list[uuid.UUID]) -> set[uuid.UUID]:
        assert self._conn is not None
        # As one text parameter the server parses: psycopg dumps a list of UUIDs one by one in
        # Python, twice the time of the query itself for a batch of 2,000 (~9 vs ~5 ms). Never
        # prepared: a generic plan cannot see the array's size and chose a scan of the table.
        wanted = "{" + ",".join([str(i) for i in ids]) + "}"
        cur = self._conn.execute(
            "SELECT id FROM audit_logs WHERE id = ANY(%s::uuid[])"
            " UNION ALL SELECT id FROM audit_quarantine WHERE id = ANY(%s::uuid[])",
            (wanted, wanted),
            prepare=False,
        )
        return {r[0] for r in cur}


# Values a ref leaves as None are kept; updated_at moves only when something changed.
_REFRESH_WORKSPACE = """
INSERT INTO workspaces AS w (id, team_id, enterprise_id, name, is_active)
VALUES (%(id)s, %(key)s, %(enterprise_id)s, %(name)s, COALESCE(%(is_active)s, true))
ON CONFLICT (team_id) DO UPDATE SET
    enterprise_id = COALESCE(EXCLUDED.enterprise_id, w.enterprise_id),
    name = COALESCE(EXCLUDED.name, w.name),
    is_active = COALESCE(%(is_active)s, w.is_active),
    updated_at = now()
WHERE (COALESCE(EXCLUDED.enterprise_id, w.enterprise_id), COALESCE(EXCLUDED.name, w.name),
       COALESCE(%(is_active)s, w.is_active))
      IS DISTINCT FROM (w.enterprise_id, w.name, w.is_active)
"""


def _refresh_params(ref: WorkspaceRef) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "key": ref.key,
        "enterprise_id": ref.enterprise_id,
        "name": ref.name,
        "is_active": ref.is_active,
    }


def _code(exc: psycopg.Error) -> str:
    """The SQLSTATE; for a connection that failed (which has none), the error's kind and why,
    in words that name no host, database or role (the message itself names them)."""
    if exc.sqlstate:
        return exc.sqlstate
    message = str(exc).lower()
    for phrases, reason in _CONNECT_REASONS:
        if all(p in message for p in phrases):
            return f"{type(exc).__name__}: {reason}"
    return type(exc).__name__


_CONNECT_REASONS = (
    (("connection refused",), "connection refused"),
    (("fatal:  database", "does not exist"), "no such database"),
    (("fatal:  role", "does not exist"), "no such role"),
    (("password authentication failed",), "password authentication failed"),
    (("no pg_hba.conf entry",), "refused by pg_hba.conf"),
    (("could not translate host name",), "unknown host"),
    (("timeout expired",), "timed out"),
)


def classify(exc: psycopg.Error) -> ErrorKind:
    state = exc.sqlstate or ""
    if state == "23505":  # a concurrent replay stored some of these events first
        return ErrorKind.CONFLICT
    if state[:2] in ("22", "23"):
        return ErrorKind.DATA
    if state[:2] in _PERMANENT_CLASSES:
        return ErrorKind.PERMANENT
    if not state and isinstance(exc, psycopg.DataError | psycopg.ProgrammingError):
        # Refused by psycopg itself before anything reached the server (a value it cannot
        # send, e.g. a NUL in text): a retry fails the same way, so find the event instead.
        return ErrorKind.DATA
    if not state and isinstance(exc, psycopg.OperationalError):
        message = str(exc)
        if any(m in message for m in _PERMANENT_MESSAGES):
            return ErrorKind.PERMANENT
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return ErrorKind.PERMANENT
    return ErrorKind.TRANSIENT
