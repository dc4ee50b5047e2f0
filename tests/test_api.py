"""The seed's API: every helper stores the row the mapping describes, on both databases."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

import auditledger
from auditledger import AuditAction, AuditLogger, ConfigurationError, WorkspaceRef
from auditledger._db.engine import make_engine
from auditledger._db.schema import workspaces
from tests.helpers import by_action, stored


def make_workspace(url: str, team_id: str = "T0001") -> uuid.UUID:
    ws = uuid.uuid4()
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(insert(workspaces).values(id=ws, team_id=team_id, name="Acme"))
    engine.dispose()
    return ws


def test_every_helper_stores_the_mapped_row(db_url: str, spool_dir: Path) -> None:
    ws = make_workspace(db_url)
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        audit.audit_login("U1", ws, ip_address="203.0.113.7", user_agent="Mozilla/5.0")
        audit.audit_logout("U1", ws)
        audit.audit_data_export("U2", ws)
        audit.audit_data_deletion("U3", ws)
        audit.audit_settings_change("U1", ws, "digest_channel", {"id": "C1"}, {"id": "C2"})
        audit.audit_oauth_connected("U1", ws, "google")
        audit.audit_oauth_disconnected("U1", ws, "google")
        audit.audit_subscription_created(ws, "pro_monthly", details={"seats": 5})
        audit.audit_subscription_cancelled(ws, details={"reason": "too expensive"})
        audit.audit_admin_action("U9", ws, "reset the bot token", details={"target": "bot"})
        assert audit.flush(10)
    events = by_action(stored(db_url))
    assert set(events) == {
        "login", "logout", "data_export_requested", "data_delete_requested", "settings_changed",
        "oauth_connected", "oauth_disconnected", "subscription_created", "subscription_cancelled",
        "admin_action",
    }  # fmt: skip
    for group in events.values():
        assert len(group) == 1
        assert group[0].workspace_id == ws
    login = events["login"][0]
    assert (login.user_id, login.resource, login.resource_id) == ("U1", "user", "U1")
    assert (login.ip_address, login.user_agent) == ("203.0.113.7", "Mozilla/5.0")
    logout = events["logout"][0]
    assert (logout.user_id, logout.resource, logout.resource_id) == ("U1", "user", "U1")
    export = events["data_export_requested"][0]
    assert (export.user_id, export.resource, export.resource_id) == ("U2", "user", "U2")
    requested = datetime.fromisoformat(export.details["requested_at"])
    assert abs((requested - export.created_at).total_seconds()) < 5
    deletion = events["data_delete_requested"][0]
    assert (deletion.user_id, deletion.resource, deletion.resource_id) == ("U3", "user", "U3")
    assert "requested_at" in deletion.details
    settings = events["settings_changed"][0]
    assert (settings.resource, settings.resource_id) == ("settings", "digest_channel")
    assert (settings.previous_value, settings.new_value) == ({"id": "C1"}, {"id": "C2"})
    for action in ("oauth_connected", "oauth_disconnected"):
        e = events[action][0]
        assert (e.user_id, e.resource, e.resource_id) == ("U1", "oauth", "google")
    created = events["subscription_created"][0]
    assert (created.user_id, created.resource, created.resource_id) == (
        None,
        "subscription",
        "pro_monthly",
    )
    assert created.details == {"seats": 5}
    cancelled = events["subscription_cancelled"][0]
    assert (cancelled.resource, cancelled.details) == ("subscription", {"reason": "too expensive"})
    admin = events["admin_action"][0]
    assert (admin.user_id, admin.resource) == ("U9", "admin")
    assert admin.details == {"description": "reset the bot token", "details": {"target": "bot"}}
    for group in events.values():
        assert group[0].sanitised is None


def test_log_audit_event_stores_every_field(db_url: str, spool_dir: Path) -> None:
    ws = make_workspace(db_url)
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        audit.log_audit_event(
            AuditAction.ADMIN_ACTION,
            user_id="U7",
            workspace_id=str(ws),
            ip_address="2001:db8::1",
            user_agent="curl/8.0",
            resource="workspace",
            resource_id="W1",
            details={"nested": {"list": [1, 2.5, "x", None, True]}},
            previous_value="plain string",
            new_value=42,
        )
        audit.log_audit_event("billing.invoice_paid", user_id="U7")
        assert audit.flush(10)
    events = by_action(stored(db_url))
    e = events["admin_action"][0]
    assert e.workspace_id == ws
    assert (e.ip_address, e.user_agent, e.resource, e.resource_id) == (
        "2001:db8::1", "curl/8.0", "workspace", "W1",
    )  # fmt: skip
    assert e.details == {"nested": {"list": [1, 2.5, "x", None, True]}}
    assert (e.previous_value, e.new_value) == ("plain string", 42)
    assert events["billing.invoice_paid"][0].user_id == "U7"
    assert e.id.version == 7


def test_created_at_is_the_moment_of_the_call_in_utc(db_url: str, spool_dir: Path) -> None:
    with AuditLogger(db_url, spool_dir=spool_dir, flush_interval=5.0) as audit:
        before = datetime.now(UTC)
        audit.audit_login("U1", None)
        after = datetime.now(UTC)
        # The flush happens well after the call; created_at must not move with it.
        audit.flush(10)
    (event,) = stored(db_url)
    assert event.created_at.tzinfo is not None
    assert event.created_at.utcoffset() == UTC.utcoffset(None)
    assert before.replace(microsecond=before.microsecond) <= event.created_at <= after


def test_values_are_captured_at_the_call(db_url: str, spool_dir: Path) -> None:
    details: dict[str, Any] = {"channels": ["C1"], "meta": {"step": 1}}
    with AuditLogger(db_url, spool_dir=spool_dir, flush_interval=5.0) as audit:
        audit.log_audit_event("settings_changed", details=details, new_value=details["channels"])
        details["channels"].append("C2")
        details["meta"]["step"] = 2
        details["added"] = True
        assert audit.flush(10)
    (event,) = stored(db_url)
    assert event.details == {"channels": ["C1"], "meta": {"step": 1}}
    assert event.new_value == ["C1"]


def test_calls_from_many_threads_and_an_event_loop(db_url: str, spool_dir: Path) -> None:
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:

        def work(n: int) -> None:
            for i in range(500):
                audit.log_audit_event("login", user_id=f"T{n}-{i}")

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()

        async def from_loop() -> bool:
            for i in range(500):
                audit.log_audit_event("logout", user_id=f"loop-{i}")
            return await audit.aflush(10)

        ok = asyncio.run(from_loop())
        for t in threads:
            t.join()
        assert audit.flush(10)
        assert ok
        stats = audit.stats()
    events = stored(db_url)
    assert len(events) == 4500
    assert len({e.id for e in events}) == 4500
    assert stats.enqueued == 4500
    assert stats.written == 4500


def test_module_level_functions_use_the_configured_logger(sqlite_url: str, spool_dir: Path) -> None:
    logger = auditledger.configure(database_url=sqlite_url, spool_dir=spool_dir)
    try:
        auditledger.audit_login("U1", None, ip_address="198.51.100.1")
        auditledger.log_audit_event(AuditAction.LOGOUT, user_id="U1")
        assert auditledger.flush(10)
        assert auditledger.get_logger() is logger
    finally:
        assert auditledger.close()
    assert sorted(e.action for e in stored(sqlite_url)) == ["login", "logout"]


def test_workspace_ref_creates_the_workspace_once(db_url: str, spool_dir: Path) -> None:
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        audit.audit_login("U1", WorkspaceRef("T42", name="Acme"))
        audit.audit_login("U2", WorkspaceRef("T42"))
        audit.audit_login("U3", WorkspaceRef(None, enterprise_id="E1"))
        assert audit.flush(10)
    events = stored(db_url)
    by_user = {e.user_id: e.workspace_id for e in events}
    assert by_user["U1"] == by_user["U2"] is not None
    assert by_user["U3"] not in (None, by_user["U1"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"queue_size": 0}, "queue_size"),
        ({"batch_size": -1}, "batch_size"),
        ({"flush_interval": 0}, "flush_interval"),
        ({"write_timeout": 0}, "write_timeout"),
        ({"max_json_bytes": 10}, "max_json_bytes"),
        ({"redact_keys": "token"}, "redact_keys"),
    ],
)
def test_bad_options_fail_at_start_up(
    options: dict[str, object], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        AuditLogger(f"sqlite:///{tmp_path / 'x.db'}", spool_dir=tmp_path, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url", ["mysql://u@h/db", "sqlite://", "postgresql+asyncpg://u@h/db", "::not a url::"]
)
def test_bad_urls_fail_at_start_up(url: str) -> None:
    with pytest.raises(ConfigurationError):
        AuditLogger(url)


def test_close_is_idempotent_and_later_events_are_spooled(sqlite_url: str, spool_dir: Path) -> None:
    audit = AuditLogger(sqlite_url, spool_dir=spool_dir)
    audit.audit_login("U1", None)
    assert audit.close(10)
    assert audit.close(10)
    audit.audit_login("late", None)  # must not raise, must not be lost
    assert audit.stats().spooled == 1
    with AuditLogger(sqlite_url, spool_dir=spool_dir) as second:
        assert second.flush(10)
    assert sorted(e.user_id or "" for e in stored(sqlite_url)) == ["U1", "late"]


def test_flush_waits_for_events_logged_before_it(sqlite_url: str, spool_dir: Path) -> None:
    with AuditLogger(sqlite_url, spool_dir=spool_dir, flush_interval=30.0) as audit:
        start = time.monotonic()
        for i in range(10):
            audit.log_audit_event("login", user_id=str(i))
        assert audit.flush(10)
        assert time.monotonic() - start < 10
        assert len(stored(sqlite_url)) == 10


def test_bound_helpers_map_rows_like_the_plain_ones() -> None:
    from auditledger import BoundAuditLogger
    from auditledger.testing import CapturingAuditLogger

    with CapturingAuditLogger() as audit:
        bound = BoundAuditLogger(
            audit, user_id="U5", workspace_id=None, ip_address="192.0.2.5", user_agent="UA"
        )
        bound.audit_login()
        bound.audit_logout()
        bound.audit_data_export()
        bound.audit_data_deletion()
        bound.audit_settings_change(setting="tone", previous_value="a", new_value="b")
        events = audit.events
    assert [(e.action, e.user_id, e.resource, e.resource_id) for e in events] == [
        ("login", "U5", "user", "U5"),
        ("logout", "U5", "user", "U5"),
        ("data_export_requested", "U5", "user", "U5"),
        ("data_delete_requested", "U5", "user", "U5"),
        ("settings_changed", "U5", "settings", "tone"),
    ]
    assert {(e.ip_address, e.user_agent) for e in events} == {("192.0.2.5", "UA")}
