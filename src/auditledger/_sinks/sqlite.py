"""The SQLite sink, the embedded default: one IMMEDIATE transaction per batch."""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator

from .._chain.canonical import CHAIN_COLUMNS, Sealed, seal
from .._chain.checkpoints import Checkpoint, Signer, make_checkpoint
from .._chain.links import Head, link_batch
from .._db import rows as r
from .._db.rows import QuarantineRow, Row
from .._db.schema import AUDIT_LOG_COLUMNS
from .._db.sqlite import connect_sqlite
from .._events import WorkspaceRef
from .base import ErrorKind, Sink, SinkError

_COLUMNS = AUDIT_LOG_COLUMNS + CHAIN_COLUMNS
_INSERT = (
    f"INSERT INTO audit_logs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"
)
_HEAD_SQL = (
    "SELECT chain_seq, chain_hash FROM audit_logs WHERE chain_id = ?"
    " ORDER BY chain_seq DESC LIMIT 1"
)
_TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's DATETIME storage format on SQLite
# Values a ref leaves as None are kept; updated_at moves only when something changed.
_REFRESH_WORKSPACE = """
INSERT INTO workspaces (id, team_id, enterprise_id, name, is_active)
VALUES (:id, :key, :enterprise_id, :name, COALESCE(:is_active, 1))
ON CONFLICT (team_id) DO UPDATE SET
    enterprise_id = COALESCE(excluded.enterprise_id, enterprise_id),
    name = COALESCE(excluded.name, name),
    is_active = COALESCE(:is_active, is_active),
    updated_at = CURRENT_TIMESTAMP
WHERE COALESCE(excluded.enterprise_id, enterprise_id) IS NOT enterprise_id
   OR COALESCE(excluded.name, name) IS NOT name
   OR COALESCE(:is_active, is_active) IS NOT is_active
"""
_CHAINS_SQL = "SELECT id FROM workspaces UNION ALL SELECT '00000000000000000000000000000000'"
_PERMANENT = ("no such table", "no such column", "readonly database", "unable to open")


def _sqlite_row(row: Row) -> tuple[object, ...]:
    return (
        row[r.ROW_ID].hex,
        row[r.ROW_USER],
        row[r.ROW_WORKSPACE].hex if row[r.ROW_WORKSPACE] is not None else None,
        *row[r.ROW_IP : r.ROW_CREATED],
        row[r.ROW_CREATED].strftime(_TS_FORMAT),
        row[r.ROW_SANITISED],
    )


def chain_heads(conn: sqlite3.Connection, chains: set[uuid.UUID]) -> dict[uuid.UUID, Head]:
    heads: dict[uuid.UUID, Head] = {}
    for chain in chains:
        found = conn.execute(_HEAD_SQL, (chain.hex,)).fetchone()
        if found is not None:
            heads[chain] = (found[0], found[1])
    return heads


class SqliteSink(Sink):
    def __init__(self, path: str, *, timeout: float) -> None:
        super().__init__()
        self._path = path
        self._timeout = timeout
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect_sqlite(self._path, timeout=self._timeout)
        return self._conn

    def write(
        self,
        rows: list[Row],
        quarantined: list[QuarantineRow],
        *,
        replay: bool,
        sealed: list[Sealed] | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> tuple[int, int]:
        try:
            conn = self._connection()
            with _immediate(conn):
                if replay:
                    rows, quarantined, sealed = self.drop_stored(rows, quarantined, sealed)
                if sealed is None:
                    rows = self.resolve_workspaces(rows)
                else:
                    self.forget_unresolved()
                if rows:
                    # BEGIN IMMEDIATE already serialises writers: the heads read here stay
                    # the heads until COMMIT.
                    sealed = seal(rows) if sealed is None else sealed
                    heads = chain_heads(conn, {s[0] for s in sealed})
                    links = link_batch(sealed, heads)
                    conn.executemany(
                        _INSERT,
                        [
                            (*_sqlite_row(r), c.hex, seq, digest, data, salt)
                            for r, (c, seq, digest, data, salt) in zip(rows, links, strict=True)
                        ],
                    )
                conn.executemany(
                    "INSERT INTO audit_quarantine (id, reason, payload, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    [
                        (q[0].hex, q[1], q[2].decode(), q[3].strftime(_TS_FORMAT))
                        for q in quarantined
                    ],
                )
            self.workspaces_committed()
            return len(rows), len(quarantined)
        except sqlite3.Error as exc:
            raise SinkError(_classify(exc), type(exc).__name__) from exc
        except (UnicodeEncodeError, OverflowError) as exc:
            # sqlite3 refuses the value itself (a lone surrogate, an integer too large):
            # retrying cannot help, so the writer isolates the event instead.
            raise SinkError(ErrorKind.DATA, type(exc).__name__) from exc

    def write_checkpoint(self, signer: Signer) -> Checkpoint:
        try:
            conn = self._connection()
            with _immediate(conn):
                chains = {uuid.UUID(r[0]) for r in conn.execute(_CHAINS_SQL)}
                heads = chain_heads(conn, chains)
                checkpoint = make_checkpoint(
                    signer, [(c, s, h) for c, (s, h) in heads.items()], time.time_ns()
                )
                conn.execute(
                    "INSERT INTO audit_checkpoints (id, created_at, key_id, body, signature)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (
                        checkpoint.id.hex,
                        checkpoint.created_at.replace(tzinfo=None).strftime(_TS_FORMAT),
                        checkpoint.key_id,
                        checkpoint.body,
                        checkpoint.signature,
                    ),
                )
            return checkpoint
        except sqlite3.Error as exc:
            raise SinkError(_classify(exc), type(exc).__name__) from exc

    def abort(self) -> None:
        if self._conn is not None:
            self._conn.interrupt()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _existing_workspaces(self, ids: list[uuid.UUID]) -> set[uuid.UUID]:
        conn = self._connection()
        marks = ", ".join("?" for _ in ids)
        cur = conn.execute(f"SELECT id FROM workspaces WHERE id IN ({marks})", [i.hex for i in ids])
        return {uuid.UUID(r[0]) for r in cur}

    def _ensure_workspaces(self, refs: list[WorkspaceRef]) -> dict[str, uuid.UUID]:
        conn = self._connection()
        conn.executemany(
            "INSERT OR IGNORE INTO workspaces (id, team_id, enterprise_id, name)"
            " VALUES (?, ?, ?, ?)",
            [(uuid.uuid4().hex, r.key, r.enterprise_id, r.name) for r in refs if not r.refreshes],
        )
        conn.executemany(
            _REFRESH_WORKSPACE,
            [
                {
                    "id": uuid.uuid4().hex,
                    "key": r.key,
                    "enterprise_id": r.enterprise_id,
                    "name": r.name,
                    "is_active": r.is_active,
                }
                for r in refs
                if r.refreshes
            ],
        )
        marks = ", ".join("?" for _ in refs)
        cur = conn.execute(
            f"SELECT team_id, id FROM workspaces WHERE team_id IN ({marks})", [r.key for r in refs]
        )
        return {r[0]: uuid.UUID(r[1]) for r in cur}

    def _existing_event_ids(self, ids: list[uuid.UUID]) -> set[uuid.UUID]:
        conn = self._connection()
        found: set[uuid.UUID] = set()
        for start in range(0, len(ids), 500):  # SQLite caps the number of parameters
            chunk = [i.hex for i in ids[start : start + 500]]
            marks = ", ".join("?" for _ in chunk)
            for table in ("audit_logs", "audit_quarantine"):
                cur = conn.execute(f"SELECT id FROM {table} WHERE id IN ({marks})", chunk)
                found.update(uuid.UUID(r[0]) for r in cur)
        return found


@contextlib.contextmanager
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One transaction that commits, or rolls back on any exception.

    IMMEDIATE takes the write lock up front: a read-then-write transaction started as
    DEFERRED can fail with BUSY when another process writes in between.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")  # inside: a failed COMMIT (BUSY) must roll back too
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _classify(exc: sqlite3.Error) -> ErrorKind:
    message = str(exc).lower()
    if isinstance(exc, sqlite3.IntegrityError):
        return ErrorKind.CONFLICT if "unique" in message else ErrorKind.DATA
    if isinstance(exc, sqlite3.ProgrammingError | sqlite3.InterfaceError):
        return ErrorKind.DATA  # a value sqlite3 cannot bind
    if any(m in message for m in _PERMANENT):
        return ErrorKind.PERMANENT
    return ErrorKind.TRANSIENT
