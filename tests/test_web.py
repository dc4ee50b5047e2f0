"""auditledger.web: the reference portal driven through the middleware, rows read from PostgreSQL.

Each request comes from a chosen socket peer (``httpx.ASGITransport(client=...)`` sets the ASGI
``client`` exactly as a server does), with X-Forwarded-For headers a client forged.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from auditledger import AuditLogger, ConfigurationError
from auditledger.testing import CapturingAuditLogger
from auditledger.web import AuditMiddleware, aget_audit, audit_lifespan, client_ip, get_audit
from examples.web_portal.app import SESSION_COOKIE, create_app
from tests.helpers import by_action, stored
from tests.test_slack import assert_no_secrets
from tests.test_workspaces import workspace_rows

TRUSTED = ["10.0.0.0/8", "2001:db8:aa::/48"]


def _trusted(ip: Any) -> bool:
    import ipaddress

    return any(ip in ipaddress.ip_network(n) for n in TRUSTED)


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        # A client talking to the app directly: whatever it forwards is ignored.
        ("203.0.113.9", ["1.1.1.1"], "203.0.113.9"),
        ("203.0.113.9", [], "203.0.113.9"),
        # Behind a trusted proxy: the hop it appended, not the forged one in front.
        ("10.0.0.2", ["6.6.6.6, 198.51.100.20"], "198.51.100.20"),
        ("10.0.0.2", ["6.6.6.6", "198.51.100.20"], "198.51.100.20"),  # two header lines
        ("10.0.0.2", ["6.6.6.6, 198.51.100.30, 10.0.0.7"], "198.51.100.30"),
        ("10.0.0.2", ["198.51.100.20:51234"], "198.51.100.20"),
        ("10.0.0.2", ["[2001:db8:1::5]:443"], "2001:db8:1::5"),
        ("2001:db8:aa::1", ["2001:db8:1::5"], "2001:db8:1::5"),
        ("::ffff:10.0.0.2", ["198.51.100.20"], "198.51.100.20"),
        # A trusted proxy with no header, or only trusted hops: the nearest of them.
        ("10.0.0.2", [], "10.0.0.2"),
        ("10.0.0.2", ["10.0.0.9, 10.0.0.7"], "10.0.0.9"),
        # A hop that is not an address ends the walk at the last one known good.
        ("10.0.0.2", ["6.6.6.6, unknown, 10.0.0.7"], "10.0.0.7"),
        # Not an IP peer at all (a Unix socket, a test client).
        ("testclient", ["6.6.6.6"], None),
        (None, ["6.6.6.6"], None),
    ],
)
def test_client_ip(peer: str | None, forwarded: list[str], expected: str | None) -> None:
    assert client_ip(peer, forwarded, _trusted) == expected


def test_bad_trusted_proxies_fail_at_start_up() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    with pytest.raises(ConfigurationError, match="not-an-ip"):
        AuditMiddleware(app, trusted_proxies=["10.0.0.0/8", "not-an-ip"])
    assert AuditMiddleware(app, trusted_proxies="127.0.0.1, 10.0.0.0/8")._networks


class Portal:
    """Sends requests to the ASGI app from a given socket peer, as a server would."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.cookies: dict[str, str] = {}

    async def request(
        self,
        peer: str,
        method: str,
        path: str,
        *,
        forwarded: str | None = None,
        agent: str = "Mozilla/5.0 (test)",
        json: Any = None,
        as_user: str | None = None,
    ) -> httpx.Response:
        headers = {"user-agent": agent}
        if forwarded is not None:
            headers["x-forwarded-for"] = forwarded
        if as_user is not None:
            headers["cookie"] = f"{SESSION_COOKIE}={self.cookies[as_user]}"
        transport = httpx.ASGITransport(app=self.app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://portal") as client:
            resp = await client.request(method, path, headers=headers, json=json)
        if SESSION_COOKIE in resp.cookies:
            self.cookies[json["username"]] = resp.cookies[SESSION_COOKIE]
        return resp


def test_the_portal_records_the_real_client_address(pg_url: str, tmp_path: Path) -> None:
    logger = AuditLogger(pg_url, spool_dir=tmp_path / "spool")
    app = create_app(logger, trusted_proxies=TRUSTED)
    portal = Portal(app)

    async def traffic() -> None:
        async with app.router.lifespan_context(app):
            r = portal.request
            # Straight from the internet, claiming to be someone else: the peer is recorded.
            resp = await r(
                "203.0.113.9",
                "POST",
                "/login",
                forwarded="1.1.1.1",
                agent="curl/8.5",
                json={"username": "alice", "password": "alice-pass"},
            )
            assert resp.status_code == 200
            # Through the load balancer (10.0.0.2), with a forged hop in front.
            login = {"username": "bob", "password": "bob-pass"}
            resp = await r(
                "10.0.0.2", "POST", "/login", forwarded="6.6.6.6, 198.51.100.20", json=login
            )
            assert resp.status_code == 200
            # Through a CDN edge and the load balancer: the CDN's client.
            chain = "6.6.6.6, 198.51.100.30, 10.0.0.7"
            resp = await r(
                "10.0.0.2",
                "PUT",
                "/settings/digest_hour",
                forwarded=chain,
                json={"value": 9},
                as_user="bob",
            )
            assert resp.status_code == 200
            resp = await r(
                "10.0.0.2",
                "PUT",
                "/settings/digest_hour",
                forwarded=chain,
                json={"value": 17},
                as_user="bob",
            )
            assert resp.status_code == 200
            via_lb = "198.51.100.20"
            assert (
                await r("10.0.0.2", "POST", "/gdpr/export", forwarded=via_lb, as_user="bob")
            ).status_code == 202
            assert (
                await r("10.0.0.2", "POST", "/gdpr/delete", forwarded=via_lb, as_user="bob")
            ).status_code == 202
            denied = await r(
                "10.0.0.2", "POST", "/admin/users/U0ALICE/suspend", forwarded=via_lb, as_user="bob"
            )
            assert denied.status_code == 403
            allowed = await r("203.0.113.9", "POST", "/admin/users/U0BOB/suspend", as_user="alice")
            assert allowed.status_code == 200
            assert (await r("203.0.113.9", "POST", "/logout", as_user="alice")).status_code == 200
            wrong = {"username": "alice", "password": "guess"}
            failed = await r(
                "2001:db8:aa::1", "POST", "/login", forwarded="2001:db8:1::5", json=wrong
            )
            assert failed.status_code == 401

    asyncio.run(traffic())
    # The lifespan closed the logger: everything it had is in the database.
    assert logger.closed

    rows = by_action(stored(pg_url))
    acme = workspace_rows(pg_url)["T0ACME"]["id"]
    logins = {e.user_id: e for e in rows["login"]}
    assert (logins["U0ALICE"].ip_address, logins["U0ALICE"].user_agent) == (
        "203.0.113.9",
        "curl/8.5",
    )
    assert logins["U0BOB"].ip_address == "198.51.100.20"
    assert logins["U0BOB"].workspace_id == acme
    changes = rows["settings_changed"]
    assert [
        (e.previous_value, e.new_value) for e in sorted(changes, key=lambda e: e.created_at)
    ] == [(None, 9), (9, 17)]
    assert {e.ip_address for e in changes} == {"198.51.100.30"}
    for action in ("data_export_requested", "data_delete_requested", "admin_access_denied"):
        [e] = rows[action]
        assert (e.user_id, e.workspace_id, e.ip_address) == ("U0BOB", acme, "198.51.100.20")
        assert e.user_agent == "Mozilla/5.0 (test)"
    [admin] = rows["admin_action"]
    assert (admin.user_id, admin.ip_address) == ("U0ALICE", "203.0.113.9")
    assert admin.details == {"description": "suspended a user", "details": {"target": "U0BOB"}}
    [logout] = rows["logout"]
    assert (logout.user_id, logout.ip_address) == ("U0ALICE", "203.0.113.9")
    [failed] = rows["login_failed"]
    assert (failed.user_id, failed.ip_address) == (None, "2001:db8:1::5")
    assert failed.details == {"username": "alice"}
    every_ip = {e.ip_address for group in rows.values() for e in group}
    assert not every_ip & {"1.1.1.1", "6.6.6.6"}  # no forged address was ever believed
    assert_no_secrets(pg_url, [*portal.cookies.values(), "alice-pass", "bob-pass", "guess"])


def test_plain_starlette_and_get_audit_without_the_middleware(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = CapturingAuditLogger()

    async def export(request: Request) -> JSONResponse:
        get_audit(request).audit_data_export("U1")
        return JSONResponse({})

    bare = Starlette(routes=[Route("/export", export, methods=["POST"])])
    wrapped = AuditMiddleware(
        Starlette(routes=[Route("/export", export, methods=["POST"])]), logger=logger
    )

    async def send(app: Any, peer: str) -> None:
        transport = httpx.ASGITransport(app=app, client=(peer, 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
            headers = {"x-forwarded-for": "6.6.6.6", "user-agent": "ua"}
            assert (await client.post("/export", headers=headers)).status_code == 200

    with logger, caplog.at_level(logging.WARNING, logger="auditledger"):
        asyncio.run(send(wrapped, "192.0.2.1"))
        from auditledger.testing import capture_audit_events

        with capture_audit_events() as default:
            asyncio.run(send(bare, "192.0.2.2"))  # falls back to the default logger
            fallback = default.events
        events = logger.events
    assert [(e.action, e.ip_address, e.user_agent) for e in events] == [
        ("data_export_requested", "192.0.2.1", "ua")
    ]
    assert [(e.ip_address, e.user_agent) for e in fallback] == [("192.0.2.2", "ua")]
    assert "without AuditMiddleware" in caplog.text


def test_the_lifespan_wraps_the_apps_own_and_starts_the_default_logger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib

    import auditledger
    from auditledger._api import default as _default

    url = f"sqlite:///{tmp_path / 'audit.db'}"
    monkeypatch.setenv("AUDITLEDGER_DATABASE_URL", url)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    steps: list[str] = []

    @contextlib.asynccontextmanager
    async def own(app: Any) -> Any:
        steps.append("own startup")
        yield {"ready": True}
        steps.append("own shutdown")

    lifespan = audit_lifespan(lifespan=own)

    async def run() -> None:
        async with lifespan(None) as state:
            assert state == {"ready": True}
            started = _default.get_logger()
            assert not started.closed
            steps.append(f"serving {started.database_backend}")
        assert started.closed

    previous = _default.set_logger(None)
    try:
        asyncio.run(run())
        assert _default._default is None  # shut down with the app, not left closed in place
    finally:
        auditledger.close()
        _default.set_logger(previous)
    assert steps == ["own startup", "serving sqlite", "own shutdown"]


def test_a_logger_closed_by_an_earlier_lifespan_fails_the_next_start() -> None:
    logger = CapturingAuditLogger()
    lifespan = audit_lifespan(logger)

    async def run_twice() -> None:
        async with lifespan(None):
            pass
        with pytest.raises(ConfigurationError, match="closed by an earlier shutdown"):
            async with lifespan(None):
                pass

    asyncio.run(run_twice())


def test_aget_audit_is_a_coroutine_dependency_with_the_same_binding() -> None:
    from fastapi import Depends, FastAPI

    from auditledger import BoundAuditLogger

    logger = CapturingAuditLogger()
    app = FastAPI()
    app.add_middleware(AuditMiddleware, logger=logger)

    @app.post("/export")
    async def export(audit: BoundAuditLogger = Depends(aget_audit)) -> dict[str, bool]:  # noqa: B008
        audit.audit_data_export(user_id="U1")
        return {"ok": True}

    async def call() -> int:
        transport = httpx.ASGITransport(app=app, client=("203.0.113.4", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://portal") as client:
            return (await client.post("/export", headers={"user-agent": "UA/1"})).status_code

    assert asyncio.run(call()) == 200
    (event,) = logger.events
    assert (event.user_id, event.ip_address, event.user_agent) == ("U1", "203.0.113.4", "UA/1")
    logger.close()
