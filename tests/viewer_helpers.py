"""A small log of two tenants and a viewer over it, shared by the viewer's tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from auditledger import AuditLogger, AuditStore, WorkspaceRef
from auditledger.web import AuditViewer, ViewerAccess, audit_viewer

# Values that must stay text wherever they are shown.
XSS = [
    "<script>window.__pwned = 1</script>",
    '"><img src=x onerror="window.__pwned=2">',
    "javascript:window.__pwned=3",
    "'; window.__pwned=4; '",
    "</textarea><svg onload=window.__pwned=5>",
]


@dataclass
class Tenants:
    url: str
    acme: uuid.UUID
    globex: uuid.UUID


def seed(url: str, spool: Path, acme_events: int = 30) -> Tenants:
    """ACME: logins of three users, a settings change, hostile values; GLOBEX: its own."""
    with AuditLogger(url, spool_dir=spool) as audit:
        for i in range(acme_events):
            audit.audit_login(f"U{i % 3}", WorkspaceRef("T0ACME"), ip_address=f"10.0.0.{i % 5}")
        audit.audit_settings_change(
            user_id="U0ADMIN",
            workspace_id=WorkspaceRef("T0ACME"),
            setting="sso_required",
            previous_value={"sso_required": False, "domain": "acme.test"},
            new_value={"sso_required": True, "domain": "acme.test"},
        )
        for n, payload in enumerate(XSS):
            # Actions must be snake_case (others are quarantined), so every other field.
            audit.log_audit_event(
                f"probe.xss_{n}",
                user_id=payload,
                workspace_id=WorkspaceRef("T0ACME"),
                ip_address="198.51.100.1",
                user_agent=payload,
                resource=payload,
                resource_id=payload,
                details={payload: payload},
                previous_value=payload,
                new_value={"value": payload},
            )
        for i in range(5):
            audit.audit_login(f"G{i}", WorkspaceRef("T0GLOBEX"), ip_address="192.0.2.9")
            audit.log_audit_event(
                "globex.secret_project", user_id="G0", workspace_id=WorkspaceRef("T0GLOBEX")
            )
        assert audit.flush()
    with AuditStore(url) as store:
        return Tenants(url, store.resolve_workspace("T0ACME"), store.resolve_workspace("T0GLOBEX"))


def header_access(request: Any) -> ViewerAccess | None:
    """The test's authorize: ``X-Test-User: name:T0ACME,T0OTHER`` names who looks and where."""
    value = request.headers.get("x-test-user")
    if not value:
        return None
    actor, _, spaces = value.partition(":")
    return ViewerAccess(actor=actor, workspaces=[s for s in spaces.split(",") if s])


@contextmanager
def viewer_over(url: str, spool: Path, **options: Any) -> Iterator[AuditViewer]:
    recorder = AuditLogger(url, spool_dir=spool)
    viewer = audit_viewer(url, authorize=header_access, logger=recorder, **options)
    try:
        yield viewer
    finally:
        viewer.close()
        recorder.close()


class Client:
    """A synchronous client for an ASGI app (httpx's ASGI transport, on a loop of its own)."""

    def __init__(
        self, app: Any, client: tuple[str, int] = ("127.0.0.1", 50000), *, lifespan: bool = False
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=client), base_url="http://viewer.test"
        )
        self._lifespan: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        if lifespan:
            self._lifespan = self._loop.create_task(
                app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                    self._inbox.get, self._outbox.put)
            )  # fmt: skip
            self._exchange("lifespan.startup")

    def _exchange(self, message: str) -> None:
        self._inbox.put_nowait({"type": message})
        answer = self._loop.run_until_complete(self._outbox.get())
        assert answer["type"] == f"{message}.complete", answer

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        answer = self._loop.run_until_complete(self._client.get(url, **kwargs))
        self._client.cookies.clear()
        return answer

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        answer = self._loop.run_until_complete(self._client.request(method, url, **kwargs))
        # Sessions are sent by each call's headers: the jar would mix up the users.
        self._client.cookies.clear()
        return answer

    def close(self) -> None:
        if self._lifespan is not None:
            self._exchange("lifespan.shutdown")
            self._loop.run_until_complete(self._lifespan)
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
