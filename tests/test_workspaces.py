"""Workspace rows: created by the first ref, refreshed by refs that carry a name or a status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from auditledger import AuditLogger, WorkspaceRef
from auditledger._capture import capture_event
from auditledger._db import make_engine
from auditledger._redact import Redactor
from auditledger._schema import workspaces
from auditledger._scrub import Scrubber
from auditledger._spool import decode_event, encode_event


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
    _, decoded = decode_event(encode_event("id-1", ev, Scrubber(Redactor()).scrub))
    assert decoded[3] == ref
