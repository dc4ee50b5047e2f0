"""Who stores which partition: PostgreSQL advisory locks on the session that commits.

Each ingester holds one "member" lock (keyed by its backend pid) so that every ingester can
count the others, and one lock per partition it owns. The locks live on the same session as
the ingester's transactions: when that session ends (the process died, the network broke),
the partitions are free at once and can be taken over, and a process that lost its session
has also lost the means to commit. A new session holds nothing, so the ingester re-claims
its partitions before it stores anything on it (``IngestSink.session``).
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Callable
from typing import Any

import psycopg

from .._chain.canonical import Sealed
from .._sinks.base import ErrorKind, SinkError
from .._sinks.postgres import PostgresSink

# Two-key advisory locks: (class, key). Classes spell "auim" and "auip", apart from the
# chain locks' "audt", and from an application's single-key locks.
MEMBER_CLASS = 0x6175696D
PARTITION_CLASS = 0x61756970
APPLICATION_NAME = "auditledger-ingest"

_THIS_DATABASE = (
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
_HELD_SQL = (
    "SELECT l.objid::int, l.pid, a.application_name FROM pg_locks l"
    " LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.classid = %s::oid AND l.objsubid = 2 AND l.granted"
    + _THIS_DATABASE
)
_MEMBERS_SQL = (
    "SELECT count(*) FROM pg_locks l WHERE l.locktype = 'advisory'"
    " AND l.classid = %s::oid AND l.objsubid = 2 AND l.granted" + _THIS_DATABASE
)


class IngestSink(PostgresSink):
    """The PostgreSQL sink of an ingester: the writer's storing, plus the ownership locks on
    the same session. ``session`` counts connections: a change means every lock is gone."""

    session = 0

    def _set_up(self, conn: psycopg.Connection[Any]) -> None:
        super()._set_up(conn)
        label = f"{APPLICATION_NAME} {socket.gethostname()}:{os.getpid()}"[:63]
        conn.execute("SELECT set_config('application_name', %s, false)", (label,))
        conn.execute("SELECT pg_advisory_lock(%s, pg_backend_pid())", (MEMBER_CLASS,))
        self.session += 1

    def connect(self) -> int:
        """Connect if needed; returns the session number. Raises SinkError."""
        with self._mapped_errors():
            self._connection()
        return self.session

    def has_tables(self) -> bool:
        """Whether the database holds the audit tables (``auditledger db upgrade`` ran)."""
        with self._mapped_errors():
            row = self._connection().execute("SELECT to_regclass('audit_logs')").fetchone()
        return row is not None and row[0] is not None

    def alive(self, session: int) -> bool:
        conn = self._conn
        return conn is not None and not conn.closed and self.session == session

    def store(
        self,
        rows: list[Any],
        quarantined: list[Any],
        session: int,
        *,
        replay: bool,
        sealed: list[Sealed] | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> tuple[int, int]:
        """``write`` on the session the partition's lock is held on, never on a new one."""
        if not self.alive(session):
            raise SinkError(ErrorKind.TRANSIENT, "session-lost")
        return self.write(rows, quarantined, replay=replay, sealed=sealed, meanwhile=meanwhile)

    def rebalance(self, partitions: int, mine: set[int]) -> tuple[set[int], set[int]]:
        """Partitions to take now and partitions to give up, for a fair share each.

        Takes free partitions up to ``ceil(partitions / ingesters)``; gives up the surplus
        (the caller unlocks them with ``release`` once their work has stopped).
        """
        with self._mapped_errors():
            conn = self._connection()
            members = conn.execute(_MEMBERS_SQL, (MEMBER_CLASS,)).fetchone()
            share = math.ceil(partitions / max(1, members[0] if members else 1))
            if len(mine) >= share:  # nothing to take: spare the query of every lock
                return set(), set(sorted(mine)[share:])
            held = {r[0] for r in conn.execute(_HELD_SQL, (PARTITION_CLASS,))}
            # Start the search at a point of our own so that ingesters starting together do not
            # all try the same partitions first.
            start = os.getpid() % partitions
            order = [(start + i) % partitions for i in range(partitions)]
            taken: set[int] = set()
            for p in order:
                if len(mine) + len(taken) >= share:
                    break
                if p in held:
                    continue
                row = conn.execute(
                    "SELECT pg_try_advisory_lock(%s, %s)", (PARTITION_CLASS, p)
                ).fetchone()
                if row and row[0]:
                    taken.add(p)
            return taken, set()

    def release(self, partitions: set[int]) -> None:
        with self._mapped_errors():
            conn = self._connection()
            for p in sorted(partitions):
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", (PARTITION_CLASS, p))


def owners(conn: psycopg.Connection[Any]) -> dict[str, list[int]]:
    """Each ingester's partitions, by its application name (host:pid), for ``status``."""
    out: dict[str, list[int]] = {}
    for partition, pid, name in conn.execute(_HELD_SQL, (PARTITION_CLASS,)):
        out.setdefault(name or f"pid {pid}", []).append(partition)
    return {k: sorted(v) for k, v in sorted(out.items())}
