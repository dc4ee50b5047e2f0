"""The library's own action namespaces (gdpr., retention., audit_log.) are its alone.

An application that logs ``gdpr.erasure`` through ``log_audit_event`` could cover tampering:
verify takes an erasure event as the authority for removed values. Such calls are quarantined
with a reason and counted; the library's own records still go in as events.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from auditledger import AuditLogger, AuditReader, AuditStore, WorkspaceRef
from auditledger._actions import LibraryAction
from auditledger._read.verify.run import verify_log
from auditledger._write.capture import capture_event
from auditledger._write.spool import decode_event, encode_event
from tests.helpers import erase_by_hand, stored

FORGED = ("gdpr.erasure", "retention.applied", "audit_log.viewed", "gdpr.subject_export", "gdpr")


def test_an_application_cannot_log_the_librarys_actions(db_url: str, spool_dir: Path) -> None:
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        for action in FORGED:
            audit.log_audit_event(action, user_id="U0APP", details={"events": []})
        audit.log_audit_event("gdpr_request.received", user_id="U0APP")  # not the namespace
        assert audit.flush(10)
        assert audit.stats().quarantined == len(FORGED)
    assert [e.action for e in stored(db_url)] == ["gdpr_request.received"]
    with AuditStore(db_url) as store:
        calls = store.quarantined(limit=100)
    # The quarantine keeps the action as the caller gave it (its repr).
    assert sorted(q.payload["action"] for q in calls) == sorted(repr(a) for a in FORGED)
    assert all("reserved for auditledger's own records" in q.reason for q in calls)


def test_the_librarys_own_records_are_still_events(db_url: str, spool_dir: Path) -> None:
    """Through the application's own logger, and after the library's record of the same
    action name: a plain string equal to a library action must not ride on its validation."""
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        audit.audit_login("U0ANN", WorkspaceRef("T0NE"), "192.0.2.1", "ua")
        assert audit.flush(10)
        with AuditReader(db_url, actor="auditor", recorder=audit) as reader:
            reader.events(user_id="U0ANN")
            reader.subject_events("U0ANN", subject_key=b"k" * 32)
        audit.log_audit_event("audit_log.viewed", user_id="U0APP")
        assert audit.flush(10)
        assert audit.stats().quarantined == 1
    actions = sorted(e.action for e in stored(db_url))
    assert actions == ["audit_log.viewed", "gdpr.subject_export", "login"]
    assert {e.user_id for e in stored(db_url) if e.action != "login"} == {"auditor"}


def test_a_forged_erasure_event_covers_nothing(db_url: str, spool_dir: Path) -> None:
    """The attack: the app's role logs a gdpr.erasure naming an event, then the value goes."""
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        audit.log_audit_event("message.sent", user_id="U0ANN", details={"text": "evidence"})
        assert audit.flush(10)
        (target,) = stored(db_url)
        audit.log_audit_event(
            "gdpr.erasure",
            user_id="dpo@example.com",
            details={"events": [str(target.id)], "erased": {str(target.id): ["details"]}},
        )
        assert audit.flush(10)
    erase_by_hand(db_url, target.id, "details")
    report = verify_log(db_url)
    assert not report.ok
    assert all("without a gdpr.erasure event" in p.detail for p in report.problems)
    assert report.erased == 0


def test_a_spooled_library_record_stays_one() -> None:
    ev = capture_event(1, LibraryAction("audit_log.viewed"), "auditor", *[None] * 8)
    event_id = str(uuid.uuid4())
    _, back = decode_event(encode_event(event_id, ev, lambda e: e))
    assert type(back[1]) is LibraryAction
    plain = capture_event(1, "audit_log.viewed", "app", *[None] * 8)
    _, back = decode_event(encode_event(event_id, plain, lambda e: e))
    assert type(back[1]) is str


@pytest.mark.parametrize("action", ["gdpr.erasure", "audit_log.exported"])
def test_the_module_level_logger_quarantines_them_too(
    action: str, sqlite_url: str, spool_dir: Path
) -> None:
    import auditledger

    auditledger.configure(database_url=sqlite_url, spool_dir=spool_dir)
    try:
        auditledger.log_audit_event(action, user_id="U0APP")
        assert auditledger.flush(10)
    finally:
        assert auditledger.close()
    assert stored(sqlite_url) == []
    with AuditStore(sqlite_url) as store:
        assert [q.payload["action"] for q in store.quarantined()] == [repr(action)]
