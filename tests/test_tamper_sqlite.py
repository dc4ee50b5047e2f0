"""Attacks on a SQLite log, by someone who can edit the file (and so drop its triggers)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest
from sqlalchemy.engine import make_url

from auditledger import AuditLogger, WorkspaceRef, verify_log


def _log(url: str, spool_dir: Path) -> None:
    with AuditLogger(url, spool_dir=spool_dir) as audit:
        for i in range(6):
            audit.audit_settings_change(f"U{i}", WorkspaceRef("T1"), "limit", i, i + 1)
        assert audit.flush(30)


def _tamper(url: str, sql: str) -> None:
    conn = sqlite3.connect(make_url(url).database or "", isolation_level=None)
    conn.execute("DROP TRIGGER audit_logs_erase_only")
    conn.execute(sql)
    conn.close()


def test_an_untouched_sqlite_log_with_numeric_values_verifies(
    sqlite_url: str, spool_dir: Path
) -> None:
    _log(sqlite_url, spool_dir)
    report = verify_log(sqlite_url)
    assert report.ok, report.problems
    assert report.events == 6


NTH = "(SELECT id FROM audit_logs ORDER BY chain_seq LIMIT 1 OFFSET 2)"


@pytest.mark.parametrize(
    ("attack", "column"),
    [
        # An offset appended: the application reads another moment; verify once dropped it.
        (
            f"UPDATE audit_logs SET created_at = created_at || '-11:00' WHERE id = {NTH}",
            "created_at",
        ),
        # The same uuid spelled in upper case: the application no longer finds the event in its
        # workspace, while a lenient parse still matched what was hashed.
        (
            f"UPDATE audit_logs SET workspace_id = upper(workspace_id) WHERE id = {NTH}",
            "workspace_id",
        ),
    ],
)
def test_respelled_values_are_detected(
    attack: str, column: str, sqlite_url: str, spool_dir: Path
) -> None:
    _log(sqlite_url, spool_dir)
    _tamper(sqlite_url, attack)
    report = verify_log(sqlite_url)
    assert not report.ok
    assert any(column in p.detail for p in report.problems), report.problems


def test_a_crafted_canonical_form_is_reported_not_fatal(sqlite_url: str, spool_dir: Path) -> None:
    # A canonical form whose workspace element is a number instead of a uuid string: reading
    # it raised out of verify (exit 2, "cannot read the events"), hiding every other finding.
    _log(sqlite_url, spool_dir)
    conn = sqlite3.connect(make_url(sqlite_url).database or "", isolation_level=None)
    conn.execute("DROP TRIGGER audit_logs_erase_only")
    (data,) = conn.execute(f"SELECT canonical FROM audit_logs WHERE id = {NTH}").fetchone()
    hashed = orjson.loads(bytes(data))
    hashed[2] = 5  # the workspace element
    conn.execute(f"UPDATE audit_logs SET canonical = ? WHERE id = {NTH}", (orjson.dumps(hashed),))
    conn.close()
    report = verify_log(sqlite_url)
    assert not report.ok
    assert any(p.kind == "modified" for p in report.problems)
