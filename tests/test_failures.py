"""Permanent errors are loud; SQLite lock-outs spool; exit is bounded; status reports."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from auditledger import AuditLogger
from auditledger._db.migrate import upgrade
from tests.children import KILLED_IN_FLIGHT, child, run_child, wait_for_line
from tests.conftest import PgDatabases
from tests.helpers import cli, stored
from tests.tcp_proxy import TcpProxy


def test_missing_schema_is_reported_as_permanent_and_events_wait_in_the_spool(
    pg_databases: PgDatabases, spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = pg_databases.create()  # exists, but nobody ran `auditledger db upgrade`
    caplog.set_level(logging.WARNING, logger="auditledger")
    audit = AuditLogger(url, spool_dir=spool_dir)
    for i in range(100):
        audit.audit_login(f"U{i}", None)
    assert audit.flush(2) is False
    stats = audit.stats()
    audit.close(timeout=2)
    assert stats.last_error == "permanent:42P01"
    assert stats.spooled == 100
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "permanently" in errors[0].getMessage()
    assert "db upgrade" in errors[0].getMessage()
    upgrade(url)
    with AuditLogger(url, spool_dir=spool_dir) as later:
        assert later.flush(30)
    assert len(stored(url)) == 100


def test_an_unknown_role_is_permanent(pg_url: str, spool_dir: Path) -> None:
    url = make_url(pg_url).set(username="no_such_role").render_as_string(hide_password=False)
    audit = AuditLogger(url, spool_dir=spool_dir)
    audit.audit_login("U1", None)
    assert audit.flush(2) is False
    assert (audit.stats().last_error or "").startswith("permanent:")
    audit.close(timeout=2)


def test_a_locked_sqlite_database_spools_and_recovers(sqlite_url: str, spool_dir: Path) -> None:
    blocker = sqlite3.connect(make_url(sqlite_url).database or "", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
    audit = AuditLogger(sqlite_url, spool_dir=spool_dir, write_timeout=0.5, flush_interval=0.05)
    for i in range(1000):
        audit.log_audit_event("login", user_id=f"locked-{i}")
    assert audit.flush(2) is False
    assert audit.stats().spooled > 0
    blocker.execute("ROLLBACK")
    blocker.close()
    assert audit.flush(30)
    audit.close()
    assert len({e.user_id for e in stored(sqlite_url)}) == 1000


@pytest.mark.parametrize("write_ahead", [True, False])
def test_sigkill_on_sqlite_while_the_batch_waits_for_the_lock(
    write_ahead: bool, sqlite_url: str, spool_dir: Path
) -> None:
    blocker = sqlite3.connect(make_url(sqlite_url).database or "", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    proc = child(KILLED_IN_FLIGHT, sqlite_url, str(spool_dir), "1500", "1" if write_ahead else "0")
    assert wait_for_line(proc, "in-flight") == "in-flight 0"
    proc.kill()
    proc.communicate(timeout=30)
    blocker.execute("ROLLBACK")
    blocker.close()
    with AuditLogger(sqlite_url, spool_dir=spool_dir) as survivor:
        assert survivor.flush(30)
    assert len(stored(sqlite_url)) == (1500 if write_ahead else 0)


HANG_AT_EXIT = """
import sys, time
from auditledger import AuditLogger
url, spool = sys.argv[1], sys.argv[2]
audit = AuditLogger(url, spool_dir=spool, shutdown_timeout=1.0, write_timeout=60.0)
for i in range(3000):
    audit.log_audit_event("logout", user_id=f"exit-{i}")
print("exiting", time.monotonic(), flush=True)
"""


def test_exit_is_bounded_when_the_database_hangs(pg_url: str, spool_dir: Path) -> None:
    url = make_url(pg_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        proxy.hang()
        hung = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        started = time.monotonic()
        done = run_child(HANG_AT_EXIT, hung, str(spool_dir))
        elapsed = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        # Interpreter start-up plus the 1 s shutdown budget, never the 60 s write timeout.
        assert elapsed < 15
        proxy.refuse()
    with AuditLogger(pg_url, spool_dir=spool_dir) as later:
        assert later.flush(30)
    assert len(stored(pg_url)) == 3000


def test_status_reports_the_spool_and_the_database(sqlite_url: str, spool_dir: Path) -> None:
    audit = AuditLogger(sqlite_url, spool_dir=spool_dir)
    audit.audit_login("U1", None)
    assert audit.flush(10)
    audit.close()
    closed = AuditLogger(sqlite_url, spool_dir=spool_dir)
    closed.close()
    closed.audit_login("waiting", None)  # after close: spooled for the next process
    result = cli("status", "--database-url", sqlite_url, "--spool-dir", str(spool_dir), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["database"] == "reachable"
    assert report["schema"] == "current"
    assert report["events_stored"] == 1
    assert report["spooled_events_replayable"] == 1
    spool = ("--spool-dir", str(spool_dir))
    broken = cli("status", "--database-url", "postgresql://nobody@127.0.0.1:1/none", *spool)
    assert broken.returncode == 1
    assert "unreachable" in broken.stdout
    unsupported = cli("status", "--database-url", "mysql://someone:secret@db/app", *spool)
    assert unsupported.returncode == 1
    assert "unreachable (ConfigurationError)" in unsupported.stdout
    assert "Traceback" not in unsupported.stderr
    assert "secret" not in unsupported.stdout + unsupported.stderr


@pytest.mark.parametrize(
    "url", ["sqlite:///audit.db", "postgres://app@db.internal:5433/app", "postgresql:///app"]
)
def test_status_without_spool_dir_inspects_the_folder_the_logger_spools_to(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Both derive the default folder from the URL; they once did it with two copies of code.
    from auditledger._api.status import default_spool_for

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    audit = AuditLogger(url)  # connects only when it first writes: nothing is logged here
    try:
        assert audit.spool_dir == default_spool_for(url)
        assert audit.spool_dir.is_relative_to(tmp_path / "state")
    finally:
        audit.close()
    if url.startswith("sqlite"):
        # End to end: `auditledger status` reports the folder the logger spools to.
        result = cli("status", "--database-url", url, "--json", cwd=tmp_path, env=dict(os.environ))
        assert json.loads(result.stdout)["spool_dir"] == str(audit.spool_dir), result.stderr


def test_help_reads_without_python_type_labels() -> None:
    for args in ([], ["verify"], ["events"], ["status"], ["checkpoint"], ["keys", "generate"]):
        result = cli(*args, "--help")
        assert result.returncode == 0, result.stderr
        for label in ("<bool>", "<str>", "<path>", "<int", "<list"):
            assert label not in result.stdout, (args, label)


def test_commands_that_read_leave_no_empty_database_behind(tmp_path: Path) -> None:
    # Connecting to a SQLite path creates the file: a mistyped --database-url (or running in
    # the wrong folder) used to leave an empty auditledger.db there.
    url = f"sqlite:///{tmp_path / 'typo.db'}"
    for command in (
        ("db", "check"),
        ("events",),
        ("status", "--spool-dir", str(tmp_path / "spool")),
        ("verify", "--public-key", str(tmp_path / "k.pub")),
        ("checkpoint", "--signing-key", str(tmp_path / "k.key")),
    ):
        done = cli(*command, "--database-url", url)
        assert done.returncode in (1, 2), command
        assert "no database file at" in done.stdout + done.stderr, command
    assert not (tmp_path / "typo.db").exists()
