"""The writer prepares the next batch while the database stores the current one.

A regression here costs no events, only throughput (flush() once drained a backlog batch after
batch with no overlap at all, at about half the speed), so these tests check the structure:
which writes carried the next batch's preparation, and that it ran before their commit.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from auditledger import AuditLogger
from auditledger._chain.canonical import NO_WORKSPACE
from auditledger._chain.links import lock_keys
from auditledger._db.urls import libpq_conninfo, normalise_url
from auditledger._ids import uuid7_batch
from auditledger._sinks.base import ErrorKind, SinkError
from auditledger._sinks.postgres import _LOCK_CLASS, PostgresSink
from auditledger._write.capture import capture_event
from auditledger._write.prepare import Limits, Preparer
from auditledger._write.watchdog import Watchdog
from tests.nats_server import wait_until


class WriteLog:
    """What each PostgresSink.write was given, and what its connection said meanwhile."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.with_meanwhile: list[bool] = []
        self.status_meanwhile: list[psycopg.pq.TransactionStatus] = []


@pytest.fixture
def write_log(monkeypatch: pytest.MonkeyPatch) -> WriteLog:
    log = WriteLog()
    real_write = PostgresSink.write

    def write(
        self: PostgresSink,
        rows: list[Any],
        quarantined: list[Any],
        *,
        replay: bool,
        sealed: Any = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> tuple[int, int]:
        log.rows.append(len(rows))
        log.with_meanwhile.append(meanwhile is not None)
        inner = meanwhile
        if inner is not None:

            def observed() -> None:
                assert self._conn is not None
                log.status_meanwhile.append(self._conn.info.transaction_status)
                inner()

            meanwhile = observed
        return real_write(
            self, rows, quarantined, replay=replay, sealed=sealed, meanwhile=meanwhile
        )

    monkeypatch.setattr(PostgresSink, "write", write)
    return log


def test_a_backlog_is_prepared_batch_by_batch_inside_the_previous_write(
    pg_url: str, spool_dir: Path, write_log: WriteLog
) -> None:
    # The writer's first batch (one event) waits on its chain's lock, held here, while 999
    # events queue up behind it and a flush asks for them: once the lock is released, the
    # flush drains them as a backlog.
    (key,) = lock_keys([NO_WORKSPACE])
    with psycopg.connect(pg_url, autocommit=True) as blocker:
        blocker.execute("SELECT pg_advisory_lock(%s, %s)", (_LOCK_CLASS, key))
        with AuditLogger(pg_url, spool_dir=spool_dir, batch_size=100) as audit:
            audit.log_audit_event("login", user_id="first")
            assert not audit.flush(0.2)  # the writer takes it and waits for the lock
            for i in range(999):
                audit.log_audit_event("login", user_id=f"U{i}")
            blocker.execute("SELECT pg_advisory_unlock(%s, %s)", (_LOCK_CLASS, key))
            assert audit.flush(30)
            assert audit.stats().written == 1000
    assert sum(write_log.rows) == 1000
    # Every write but the first (its batch was alone when taken) and the last hands the
    # sink the next batch's preparation; one more may miss it, depending on when the writer
    # woke up.
    assert sum(write_log.with_meanwhile) >= len(write_log.rows) - 3 >= 8
    # ...and the sink ran it while its transaction was open, before the commit (except where
    # its locks took long to get: see the next test).
    assert len(write_log.status_meanwhile) >= len(write_log.rows) - 4
    assert all(s is not psycopg.pq.TransactionStatus.IDLE for s in write_log.status_meanwhile)


def test_other_writers_waiting_for_the_chain_do_not_wait_for_our_preparation(
    pg_url: str,
) -> None:
    # While another writer holds the chain's lock, the next batch is prepared after the
    # commit instead of inside the transaction, where it would hold the lock longer.
    sink = PostgresSink(libpq_conninfo(normalise_url(pg_url)), connect_timeout=10)
    preparer = Preparer(Limits())
    (key,) = lock_keys([NO_WORKSPACE])

    def batch(n: int) -> list[Any]:
        ids = uuid7_batch([time.time_ns()] * n)
        events = [capture_event(time.time_ns(), "login", f"U{i}", *[None] * 8) for i in range(n)]
        return preparer.prepare(ids, events)[0]

    ran: list[bool] = []
    try:
        sink.write(batch(3), [], replay=False, meanwhile=lambda: ran.append(True))
        assert ran == [True]  # nobody else wanted the chain
        with psycopg.connect(pg_url, autocommit=True) as other:
            other.execute("SELECT pg_advisory_lock(%s, %s)", (_LOCK_CLASS, key))
            release = threading.Timer(
                0.3, other.execute, ("SELECT pg_advisory_unlock(%s, %s)", (_LOCK_CLASS, key))
            )
            release.start()
            sink.write(batch(3), [], replay=False, meanwhile=lambda: ran.append(False))
            release.join()
        assert ran == [True]
    finally:
        sink.close()


def _login_rows(preparer: Preparer, n: int) -> list[Any]:
    ids = uuid7_batch([time.time_ns()] * n)
    events = [capture_event(time.time_ns(), "login", f"U{i}", *[None] * 8) for i in range(n)]
    return preparer.prepare(ids, events)[0]


def test_the_next_batch_is_prepared_while_the_server_ends_the_copy(pg_url: str) -> None:
    # The server checks a COPY's foreign keys only once the COPY has ended: the end is sent
    # before the preparation runs, so the server finishes the statement meanwhile (before,
    # it waited for the preparation to finish first).
    sink = PostgresSink(libpq_conninfo(normalise_url(pg_url)), connect_timeout=10)
    states: list[str] = []
    try:
        sink.write(_login_rows(Preparer(Limits()), 1), [], replay=False)
        assert sink._conn is not None
        backend = sink._conn.info.backend_pid

        def meanwhile() -> None:
            with psycopg.connect(pg_url, autocommit=True) as watcher:

                def state() -> str:
                    row = watcher.execute(
                        "SELECT state FROM pg_stat_activity WHERE pid = %s", (backend,)
                    ).fetchone()
                    return str(row[0]) if row else ""

                wait_until(lambda: state() == "idle in transaction", 10, "the COPY's end")
                states.append(state())

        stored, _ = sink.write(
            _login_rows(Preparer(Limits()), 500), [], replay=False, meanwhile=meanwhile
        )
        assert (stored, states) == (500, ["idle in transaction"])
    finally:
        sink.close()


def test_a_row_the_server_refuses_after_the_copy_ended_early(pg_url: str) -> None:
    # The server's refusal arrives once the preparation has run: reported as the row's
    # fault (the writer then finds that row), and the session stays usable.
    sink = PostgresSink(libpq_conninfo(normalise_url(pg_url)), connect_timeout=10)
    preparer = Preparer(Limits())
    ran: list[bool] = []
    try:
        rows = _login_rows(preparer, 50)
        rows[20] = (*rows[20][:8], '{"not": json', *rows[20][9:])
        with pytest.raises(SinkError) as refused:
            sink.write(rows, [], replay=False, meanwhile=lambda: ran.append(True))
        assert refused.value.kind is ErrorKind.DATA
        assert ran == [True]
        assert sink.write(_login_rows(preparer, 5), [], replay=False) == (5, 0)
    finally:
        sink.close()
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT count(*) FROM audit_logs").fetchone()
    assert row is not None
    assert row[0] == 5


def test_the_write_deadline_stops_while_the_writer_does_its_own_work() -> None:
    watchdog = Watchdog()
    fired = threading.Event()
    with watchdog.deadline(0.2, fired.set):
        with watchdog.paused():
            # Work that outlasts the deadline (the next batch's preparation, in the writer):
            # the deadline must not fire meanwhile.
            assert not fired.wait(0.5)
        assert not fired.is_set()
        # Resumed with the time that was left: it fires now, not 0.2 s after the pause began.
        assert fired.wait(5)
    assert watchdog.fired == 1


def test_an_event_id_once_given_never_changes(sqlite_url: str, spool_dir: Path) -> None:
    # close() may spool a held batch while the writer is still filling it: the ids it gave
    # the first events must be the ones the writer stores them under (replay de-duplicates
    # by id), so the writer only gives ids to the events added since.
    with AuditLogger(sqlite_url, spool_dir=spool_dir) as audit:
        writer = audit._writer
        batch = [capture_event(time.time_ns(), "login", f"U{i}", *[None] * 8) for i in range(2)]
        ids: list[uuid.UUID] = []
        writer._assign_ids(ids, batch)
        first = list(ids)
        batch.append(capture_event(time.time_ns(), "login", "U2", *[None] * 8))
        writer._assign_ids(ids, batch)
        assert ids[:2] == first
        assert len(set(ids)) == 3
