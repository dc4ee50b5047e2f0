"""Workspace rows: created by the first ref, refreshed by refs that carry a name or a status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from auditledger import AuditLogger, AuditStore, WorkspaceRef
from auditledger._db.engine import make_engine
from auditledger._db.schema import workspaces
from auditledger._write.capture import capture_event
from auditledger._write.spool import decode_event, encode_event
from tests.helpers import add_rule, stored


def workspace_rows(url: str) -> dict[str, dict[str, Any]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(workspaces)).mappings().all()
    finally:
        engine.dispose()
    return {r["team_id"]: dict(r) for r in rows}


def test_refs_with_a_name_or_status_refresh_the_row(db_url: str, spool_dir: Path) -> None:
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        audit.audit_login("U1", WorkspaceRef("T1"))
        assert audit.flush(10)
        first = workspace_rows(db_url)["T1"]
        assert (first["name"], first["is_active"]) == (None, True)

        # Uninstall, then a plain ref in the same batch: the plain one must not hide it.
        audit.audit_oauth_disconnected(None, WorkspaceRef("T1", is_active=False), "slack")
        audit.audit_login("U2", WorkspaceRef("T1"))
        assert audit.flush(10)
        row = workspace_rows(db_url)["T1"]
        assert (row["id"], row["name"], row["is_active"]) == (first["id"], None, False)

        audit.audit_oauth_connected("U1", WorkspaceRef("T1", name="Acme", is_active=True), "slack")
        assert audit.flush(10)
        row = workspace_rows(db_url)["T1"]
        assert (row["id"], row["name"], row["is_active"]) == (first["id"], "Acme", True)

        # Install and uninstall in one batch: both refreshes apply, the later status winning.
        audit.audit_oauth_connected("U1", WorkspaceRef("T2", name="Two", is_active=True), "slack")
        audit.audit_oauth_disconnected(None, WorkspaceRef("T2", is_active=False), "slack")
        assert audit.flush(10)
        row = workspace_rows(db_url)["T2"]
        assert (row["name"], row["is_active"]) == ("Two", False)

        # Org-wide install: keyed by the enterprise id; a later rename keeps the enterprise id.
        audit.audit_oauth_connected("U9", WorkspaceRef(None, "E1", name="Big", is_active=True))
        audit.audit_login("U9", WorkspaceRef(None, "E1", name="Bigger"))
        assert audit.flush(10)
    rows = workspace_rows(db_url)
    assert (rows["E1"]["enterprise_id"], rows["E1"]["name"]) == ("E1", "Bigger")
    assert set(rows) == {"T1", "T2", "E1"}


def test_the_spool_keeps_a_refresh() -> None:
    ref = WorkspaceRef("T1", "E1", "Acme", is_active=False)
    ev = capture_event(1, "oauth_disconnected", None, ref, None, None, None, None, None, None, None)
    _, decoded = decode_event(encode_event("id-1", ev))
    assert decoded[3] == ref


def test_a_nul_in_a_workspace_name_does_not_block_the_spool(db_url: str, spool_dir: Path) -> None:
    # psycopg refused the NUL on the client side without a SQLSTATE; it was taken for an
    # outage, spooled, and every replay failed on it again: nothing was ever written.
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        audit.audit_login("U0", WorkspaceRef("T1", name="Acme\x00Corp"))
        audit.audit_login("U1", WorkspaceRef({"not": "a string"}))  # type: ignore[arg-type]
        audit.audit_login("U2", WorkspaceRef("T\ud800"))
        for i in range(50):
            audit.audit_login(f"later{i}", None)
        assert audit.flush(30)
        assert audit.stats().spooled == 0
    events = {e.user_id: e for e in stored(db_url)}
    assert len(events) == 53
    assert all(events[u].workspace_id is not None for u in ("U0", "U1", "U2"))
    assert any(n["field"] == "workspace.name" for n in events["U0"].sanitised or [])


def test_a_rolled_back_workspace_is_not_reused(db_url: str, spool_dir: Path) -> None:
    # The batch that first created the workspace rolled back; its id stayed cached and every
    # later event for that workspace failed its foreign key and was quarantined.
    add_rule(
        db_url,
        "ALTER TABLE audit_logs ADD CONSTRAINT no_bad CHECK (user_id <> 'bad')",
        "CREATE TRIGGER no_bad BEFORE INSERT ON audit_logs WHEN NEW.user_id = 'bad'"
        " BEGIN SELECT RAISE(ABORT, 'no bad'); END",
    )
    with AuditLogger(db_url, spool_dir=spool_dir, flush_interval=5.0) as audit:
        audit.audit_login("good", WorkspaceRef("TNEW", name="New"))
        audit.audit_login("bad", WorkspaceRef("TNEW"))
        assert audit.flush(30)
        audit.audit_login("later", WorkspaceRef("TNEW"))
        assert audit.flush(30)
    users = {e.user_id: e.workspace_id for e in stored(db_url)}
    assert set(users) == {"good", "later"}
    assert users["good"] == users["later"] is not None
    with AuditStore(db_url) as store:
        assert [q.payload["user_id"] for q in store.quarantined()] == ["bad"]
