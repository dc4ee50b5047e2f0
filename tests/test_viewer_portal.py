"""The reference portal mounts the viewer: admins see their workspace, members see a 404."""

from __future__ import annotations

from pathlib import Path

from auditledger import AuditLogger, AuditStore
from examples.web_portal.app import create_app
from tests.viewer_helpers import Client


def _sign_in(client: Client, name: str) -> dict[str, str]:
    answer = client.post("/login", json={"username": name, "password": f"{name}-pass"})
    assert answer.status_code == 200
    return {"cookie": f"portal_session={answer.cookies['portal_session']}"}


def test_admins_see_their_trail_and_members_a_404(sqlite_url: str, tmp_path: Path) -> None:
    logger = AuditLogger(sqlite_url, spool_dir=tmp_path / "spool")
    app = create_app(logger, viewer_database_url=sqlite_url)
    with Client(app, lifespan=True) as client:
        alice, bob, gina = (_sign_in(client, n) for n in ("alice", "bob", "gina"))
        changed = client.request(
            "PUT", "/settings/sso_required", json={"value": True}, headers=alice
        )
        assert changed.status_code == 200
        assert logger.flush()
        page = client.get("/audit/", headers=alice)
        assert page.status_code == 200
        assert "sso_required" in page.text
        assert "/audit/static/viewer.js" in page.text  # links work under the mount
        assert client.get("/audit/static/viewer.css", headers=alice).status_code == 200
        for path in ("/audit/", "/audit/api/events", "/audit/export?format=csv"):
            assert client.get(path, headers=bob).status_code == 404
        assert client.get("/audit/").status_code == 403  # not signed in
        # Gina administers another workspace: ACME's trail does not exist for her.
        with AuditStore(sqlite_url) as store:
            acme = store.resolve_workspace("T0ACME")
        assert client.get(f"/audit/?workspace={acme}", headers=gina).status_code == 404
        assert "sso_required" not in client.get("/audit/", headers=gina).text
    assert logger.closed  # the portal's lifespan closed the logger, and the viewer with it
    with AuditStore(sqlite_url) as store:
        views = store.events(workspace_id=acme, action="audit_log.viewed")
    assert {v.user_id for v in views} == {"U0ALICE"}
