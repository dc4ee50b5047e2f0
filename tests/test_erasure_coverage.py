"""verify holds each erased value to a gdpr.erasure event: same chain, later position, itself
verified, naming that event and that column; a value merely nulled (salt kept) is tampering."""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from auditledger import AuditLogger, WorkspaceRef
from auditledger._actions import LibraryAction
from auditledger._gdpr.erase import erase_subject
from auditledger._read.verify.erasures import Coverer, check_coverage, coverer
from auditledger._read.verify.report import VerifyProblem
from auditledger._read.verify.run import verify_log
from tests.helpers import erase_by_hand, row_id, run_sql, stored

SUBJECT = "U0SUBJ3CT9"


def _write(url: str, spool: Path, *more: dict[str, Any]) -> None:
    with AuditLogger(url, spool_dir=spool) as audit:
        one = WorkspaceRef("T0NE")
        audit.audit_login(SUBJECT, one, "203.0.113.77", "Mozilla/5.0 (phone)")
        audit.log_audit_event(
            "admin_action", user_id="U0OTHER771", workspace_id=one, ip_address="198.51.100.2",
            user_agent="curl/8", resource="user", resource_id="U0KEPT0001",
            details={"note": "kept"},
        )  # fmt: skip
        for event in more:
            audit.log_audit_event(**event)
        assert audit.flush(20)


def _erase(url: str, tmp: Path) -> None:
    erase_subject(url, SUBJECT, reason="Art. 17", actor="dpo@example.com", subject_key=b"k" * 40)


def _problems(url: str) -> list[VerifyProblem]:
    return verify_log(url).problems


def test_the_erasure_event_names_each_erased_column(db_url: str, spool_dir: Path) -> None:
    _write(db_url, spool_dir)
    _erase(db_url, spool_dir)
    login = next(e for e in stored(db_url) if e.action == "login")
    (record,) = [e for e in stored(db_url) if e.action == "gdpr.erasure"]
    assert isinstance(record.details, dict)
    assert record.details["erased"] == {
        str(login.id): ["ip_address", "resource_id", "user_agent", "user_id"]
    }
    report = verify_log(db_url)
    assert report.ok, report.problems
    assert report.erased == 1


def test_a_listed_event_erased_beyond_its_listed_columns(db_url: str, spool_dir: Path) -> None:
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        audit.log_audit_event(
            "admin_action", user_id=SUBJECT, workspace_id=WorkspaceRef("T0NE"),
            ip_address="203.0.113.77", resource="user", resource_id="U0KEPT0001",
            details={"note": "kept"},
        )  # fmt: skip
        assert audit.flush(20)
    _erase(db_url, spool_dir)
    (event,) = [e for e in stored(db_url) if e.action == "admin_action"]
    assert event.user_id is None
    assert event.details == {"note": "kept"}
    # The same event, listed by the erasure for its actor values only, loses its details too.
    erase_by_hand(db_url, event.id, "details")
    problems = _problems(db_url)
    assert [(p.event_id, p.detail) for p in problems] == [
        (event.id, "values removed without a gdpr.erasure event covering them: details")
    ]


def test_an_erasure_event_of_another_chain_covers_nothing(db_url: str, spool_dir: Path) -> None:
    _write(db_url, spool_dir)
    admin = next(e for e in stored(db_url) if e.action == "admin_action")
    # Whoever can log can log a "gdpr.erasure" action: in another chain it vouches for nothing.
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        audit.log_audit_event(
            "gdpr.erasure", workspace_id=WorkspaceRef("T0TWO"),
            details={"events": [str(admin.id)], "erased": {str(admin.id): ["details"]}},
        )  # fmt: skip
        assert audit.flush(20)
    erase_by_hand(db_url, admin.id, "details")
    assert [p.event_id for p in _problems(db_url)] == [admin.id]


def test_an_old_erasure_event_covers_the_columns_erasure_may_touch(
    db_url: str, spool_dir: Path
) -> None:
    _write(db_url, spool_dir)
    admin = next(e for e in stored(db_url) if e.action == "admin_action")
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        # Written as the library's own erasure path wrote it before the per-column list.
        audit.log_audit_event(
            LibraryAction("gdpr.erasure"), workspace_id=WorkspaceRef("T0NE"),
            details={"events": [str(admin.id)], "reason": "before the per-column list"},
        )  # fmt: skip
        assert audit.flush(20)
    erase_by_hand(db_url, admin.id, "ip_address", "details", "resource_id")
    report = verify_log(db_url)
    assert report.ok, report.problems
    assert report.erased == 1


def test_a_forged_erasure_row_outside_the_chain_covers_nothing(
    db_url: str, spool_dir: Path
) -> None:
    _write(db_url, spool_dir)
    admin = next(e for e in stored(db_url) if e.action == "admin_action")
    details = json.dumps({"events": [str(admin.id)], "erased": {str(admin.id): ["details"]}})
    forged = uuid.uuid4()
    run_sql(
        db_url,
        "INSERT INTO audit_logs (id, workspace_id, action, details, created_at)"
        " SELECT %s, workspace_id, 'gdpr.erasure', %s, created_at FROM audit_logs WHERE id = %s",
        row_id(db_url, forged), details, row_id(db_url, admin.id),
    )  # fmt: skip
    erase_by_hand(db_url, admin.id, "details")
    assert {p.event_id for p in _problems(db_url)} == {forged, admin.id}


def test_a_value_nulled_with_its_salt_kept_is_not_an_erasure(db_url: str, spool_dir: Path) -> None:
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        audit.log_audit_event(
            "admin_action", user_id="U0OTHER771", workspace_id=WorkspaceRef("T0NE"),
            ip_address="198.51.100.2",
        )  # fmt: skip
        assert audit.flush(20)
    other = next(e for e in stored(db_url) if e.user_id == "U0OTHER771")
    # Covered for its address, which is then nulled with its salt left to open the commitment.
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        audit.log_audit_event(
            "gdpr.erasure", workspace_id=WorkspaceRef("T0NE"),
            details={"events": [str(other.id)], "erased": {str(other.id): ["ip_address"]}},
        )  # fmt: skip
        assert audit.flush(20)
    nulled = "UPDATE audit_logs SET ip_address = NULL WHERE id = %s"
    # The database refuses it (migration 0008); one whose trigger was dropped or bypassed
    # does not, and verify must still tell.
    with pytest.raises((sqlite3.IntegrityError, psycopg.errors.InsufficientPrivilege)):
        run_sql(db_url, nulled, row_id(db_url, other.id))
    if db_url.startswith("sqlite"):
        conn = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("DROP TRIGGER audit_logs_erase_only")
        conn.execute(nulled.replace("%s", "?"), (other.id.hex,))
        conn.close()
    else:
        with psycopg.connect(db_url, autocommit=True) as pg:
            pg.execute("SET session_replication_role = replica")
            pg.execute(nulled, (other.id,))
    problems = _problems(db_url)
    assert [p.event_id for p in problems] == [other.id]
    assert "salts were not zeroed" in problems[0].detail


def test_coverage_needs_a_later_position_in_the_same_chain() -> None:
    chain, event = uuid.uuid4(), uuid.uuid4()
    names = ("ip_address",)
    erased = [(event, chain, 5, names)]
    details = {"erased": {str(event): ["ip_address"]}}
    before = coverer(uuid.uuid4(), chain, 4, json.dumps(details))
    after = coverer(uuid.uuid4(), chain, 6, json.dumps(details))
    assert isinstance(before, Coverer)
    assert isinstance(after, Coverer)
    problems: list[VerifyProblem] = []
    assert check_coverage(problems, erased, [before]) == 1
    assert check_coverage([], erased, [after]) == 0
    doubted = [VerifyProblem("modified", "changed", after.event_id)]
    assert check_coverage(doubted, erased, [after]) == 1
