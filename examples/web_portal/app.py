"""The web portal of a Slack app: users sign in, change settings, ask for their data.

Every endpoint audits through ``auditledger.web``: the middleware finds the client's address
(behind trusted proxies), ``get_audit`` hands out the request's helper, and the ``current_user``
dependency binds the signed-in user and their Slack workspace to it, so handlers only say what
happened. Users and settings live in memory: this is a demonstration, not a user store.
"""

# No "from __future__ import annotations": FastAPI resolves the dependency annotations of the
# routes below at runtime, and some of them are local to create_app.
import asyncio
import contextlib
import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from pydantic import BaseModel

from auditledger import AuditLogger, BoundAuditLogger, WorkspaceRef
from auditledger.web import (
    AuditMiddleware,
    TrustedProxies,
    ViewerAccess,
    audit_lifespan,
    audit_viewer,
    get_audit,
)

SESSION_COOKIE = "portal_session"
_SALT = secrets.token_bytes(16)


def _hash(password: str) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), _SALT, 10_000)


@dataclass(frozen=True)
class User:
    username: str
    user_id: str  # the user's Slack id: the same person in the backend's events
    team_id: str
    is_admin: bool
    password_hash: bytes = field(repr=False)

    @property
    def workspace(self) -> WorkspaceRef:
        return WorkspaceRef(self.team_id)


def demo_users() -> dict[str, User]:
    """Demo accounts; the password of each is its username followed by ``-pass``."""
    people = [
        ("alice", "U0ALICE", "T0ACME", True),
        ("bob", "U0BOB", "T0ACME", False),
        ("gina", "U0GINA", "T0GLOBEX", True),
    ]
    return {
        name: User(name, uid, team, admin, _hash(f"{name}-pass"))
        for name, uid, team, admin in people
    }


class Credentials(BaseModel):
    username: str
    password: str


class SettingValue(BaseModel):
    value: Any


@dataclass
class PortalState:
    users: dict[str, User]
    sessions: dict[str, User] = field(default_factory=dict)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    suspended: set[str] = field(default_factory=set)


Audit = Annotated[BoundAuditLogger, Depends(get_audit)]


def create_app(
    logger: AuditLogger | None = None,
    *,
    trusted_proxies: TrustedProxies = ("127.0.0.1", "::1"),
    users: dict[str, User] | None = None,
    viewer_database_url: str | None = None,
) -> FastAPI:
    """The portal; ``logger=None`` audits through auditledger's default logger.

    With ``viewer_database_url``, workspace admins find their workspace's audit trail at
    /audit/ (auditledger's viewer, reading that database); anyone else gets 404 there.
    """
    state = PortalState(users if users is not None else demo_users())

    def viewer_access(request: Request) -> ViewerAccess | None:
        user = state.sessions.get(request.cookies.get(SESSION_COOKIE, ""))
        if user is None or user.user_id in state.suspended:
            return None
        # A member is granted no workspace: every viewer URL is then a 404, as if it did
        # not exist, rather than a 403 that confirms there is something to see.
        return ViewerAccess(actor=user.user_id, workspaces=[user.team_id] if user.is_admin else [])

    viewer = (
        None
        if viewer_database_url is None
        else audit_viewer(viewer_database_url, authorize=viewer_access, logger=logger)
    )

    @contextlib.asynccontextmanager
    async def close_viewer(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if viewer is not None:
                # Mounted apps get no lifespan of their own: the host closes the viewer.
                await asyncio.to_thread(viewer.close)

    app = FastAPI(title="Portal", lifespan=audit_lifespan(logger, lifespan=close_viewer))
    if viewer is not None:
        app.mount("/audit", viewer)
    # Pure ASGI middleware, so it runs for every request, routing errors included.
    app.add_middleware(AuditMiddleware, logger=logger, trusted_proxies=trusted_proxies)

    def current_user(request: Request, audit: Audit) -> User:
        user = state.sessions.get(request.cookies.get(SESSION_COOKIE, ""))
        if user is None or user.user_id in state.suspended:
            raise HTTPException(401, "sign in first")
        # Bound once: every event of this request now names the user and the workspace.
        audit.user_id, audit.workspace_id = user.user_id, user.workspace
        return user

    CurrentUser = Annotated[User, Depends(current_user)]

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/login")
    def login(creds: Credentials, response: Response, audit: Audit) -> dict[str, str]:
        user = state.users.get(creds.username)
        candidate = _hash(creds.password)
        if user is None or not hmac.compare_digest(user.password_hash, candidate):
            # The attempted name, never the password: failed sign-ins are what incidents
            # are investigated with.
            audit.log_audit_event(
                "login_failed", resource="user", details={"username": creds.username[:64]}
            )
            raise HTTPException(401, "wrong username or password")
        session = secrets.token_urlsafe(24)
        state.sessions[session] = user
        response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="lax")
        audit.audit_login(user.user_id, user.workspace)
        return {"user_id": user.user_id}

    @app.post("/logout")
    def logout(request: Request, response: Response, user: CurrentUser, audit: Audit) -> None:
        state.sessions.pop(request.cookies.get(SESSION_COOKIE, ""), None)
        response.delete_cookie(SESSION_COOKIE)
        audit.audit_logout()

    @app.get("/settings")
    def read_settings(user: CurrentUser) -> dict[str, Any]:
        return state.settings.get(user.team_id, {})

    @app.put("/settings/{name}")
    def change_setting(
        name: str, body: SettingValue, user: CurrentUser, audit: Audit
    ) -> dict[str, Any]:
        team_settings = state.settings.setdefault(user.team_id, {})
        previous = team_settings.get(name)
        team_settings[name] = body.value
        audit.audit_settings_change(setting=name, previous_value=previous, new_value=body.value)
        return team_settings

    @app.post("/gdpr/export", status_code=202)
    def request_export(user: CurrentUser, audit: Audit) -> dict[str, str]:
        audit.audit_data_export()
        return {"status": "queued"}

    @app.post("/gdpr/delete", status_code=202)
    def request_deletion(user: CurrentUser, audit: Audit) -> dict[str, str]:
        audit.audit_data_deletion()
        return {"status": "queued"}

    @app.post("/admin/users/{target}/suspend")
    def suspend(target: str, user: CurrentUser, audit: Audit) -> dict[str, str]:
        if not user.is_admin:
            audit.log_audit_event(
                "admin_access_denied", resource="admin", details={"attempted": "suspend"}
            )
            raise HTTPException(403, "admins only")
        state.suspended.add(target)
        audit.audit_admin_action(description="suspended a user", details={"target": target})
        return {"suspended": target}

    return app
