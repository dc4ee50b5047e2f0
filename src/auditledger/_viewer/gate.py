"""Who is asking, and which workspaces exist for them: every route asks here first.

Only the workspaces granted by the host's ``authorize`` (or by an API token, or by the
operator's front) exist for a request. Anything else, whether unknown, another tenant's, or
named by a cursor bound to another tenant, is ``NotFound``: the same 404 with the same body.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import anyio.to_thread
from sqlalchemy import Engine, select
from starlette.requests import Request

from .._db.schema import audit_logs
from .access import Authorize, ViewerAccess, call_authorize
from .filters import FilterError
from .tokens import check_token
from .workspaces import WorkspaceCatalog

# Set by a front (``auditledger serve``) that has already authenticated the request.
ACCESS_KEY = "auditledger.viewer.access"


class NotFound(Exception):
    """Anything the request may not know about: answered 404 with one fixed body."""


class Refused(Exception):
    """No access at all: 401 (no or a bad token) or 403 (``authorize`` said no)."""

    def __init__(self, status: int) -> None:
        self.status = status


@dataclass(frozen=True)
class Grant:
    """What one request may read: workspace ids (in the host's order) or ``everything``."""

    actor: str
    allowed: frozenset[uuid.UUID]
    order: tuple[uuid.UUID, ...]
    everything: bool
    via_token: bool = False


class Gate:
    def __init__(self, engine: Engine, catalog: WorkspaceCatalog, authorize: Authorize) -> None:
        self._engine = engine
        self._catalog = catalog
        self._authorize = authorize

    async def grant(self, request: Request, *, api: bool) -> Grant:
        preset = request.scope.get(ACCESS_KEY)
        access: ViewerAccess | None
        if isinstance(preset, ViewerAccess):
            access = preset
        else:
            bearer = _bearer(request)
            if bearer is not None:
                # A pull client's token: the API only, and only its own workspace.
                if not api:
                    raise Refused(401)
                token = await anyio.to_thread.run_sync(check_token, self._engine, bearer)
                if token is None:
                    raise Refused(401)
                return Grant(
                    f"api-token/{token.name}",
                    frozenset([token.workspace_id]),
                    (token.workspace_id,),
                    everything=False,
                    via_token=True,
                )
            access = await call_authorize(self._authorize, request)
        if access is None:
            raise Refused(403)
        if access.all_workspaces:
            return Grant(access.actor, frozenset(), (), everything=True)
        ids = await anyio.to_thread.run_sync(self._resolve_all, list(access.workspaces))
        return Grant(access.actor, frozenset(ids), tuple(ids), everything=False)

    def _resolve_all(self, names: list[str | uuid.UUID]) -> list[uuid.UUID]:
        out: list[uuid.UUID] = []
        for name in names:
            found = self._catalog.resolve(name)
            if found is not None and found not in out:
                out.append(found)
        return out

    def scope(self, grant: Grant, asked: str | None, *, required: bool) -> uuid.UUID | None:
        """The workspace this request reads: one the grant holds, or 404."""
        if asked:
            found = self._catalog.resolve(asked.strip())
            if found is None:
                raise NotFound
            if grant.everything:
                if not self._exists(found):
                    raise NotFound
                return found
            if found not in grant.allowed:
                raise NotFound
            return found
        if grant.everything:
            if required:
                raise FilterError("workspace: pick one workspace")
            return None
        if not grant.order:
            raise NotFound
        if len(grant.order) > 1 and required:
            raise FilterError("workspace: pick one of your workspaces")
        return grant.order[0]

    def _exists(self, workspace: uuid.UUID) -> bool:
        with self._engine.connect() as conn:
            query = select(audit_logs.c.id).where(audit_logs.c.chain_id == workspace).limit(1)
            return conn.execute(query).first() is not None or bool(
                self._catalog.describe([workspace])[0].team_id
            )


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
