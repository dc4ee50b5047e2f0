"""The mountable viewer: routes, who may see what, and the record of every look.

Every route resolves the workspace the same way (``_scope``): only workspaces granted by
``authorize`` (or by an API token) exist for the request; anything else, whether unknown, another
tenant's, or a cursor bound to another tenant, is the same 404 with the same body.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import anyio.to_thread
from sqlalchemy import Engine, select
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .._errors import InvalidCursor
from .._schema import audit_logs
from .._store import AuditStore
from .access import Authorize, ViewerAccess, call_authorize
from .badge import BadgeCache
from .filters import FilterError, Filters
from .headers import SecurityHeaders
from .page import MAX_BACK, PageView, render_page
from .records import diff, event_json
from .tokens import check_token
from .workspaces import Workspace, WorkspaceCatalog

log = logging.getLogger("auditledger")

# Set by a front (``auditledger serve``) that has already authenticated the request.
ACCESS_KEY = "auditledger.viewer.access"
_BOUND_AUDIT = "auditledger.audit"  # the request's helper, when the host has AuditMiddleware
_STATIC_TYPES = {"viewer.js": "text/javascript", "viewer.css": "text/css"}
_PAGE_SIZE = 50


class NotFound(Exception):
    """Anything the request may not know about: answered 404 with one fixed body."""


class Refused(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


@dataclass(frozen=True)
class Grant:
    actor: str
    allowed: frozenset[uuid.UUID]
    order: tuple[uuid.UUID, ...]
    everything: bool
    via_token: bool = False


def _static() -> dict[str, bytes]:
    folder = resources.files("auditledger._viewer") / "static"
    return {name: (folder / name).read_bytes() for name in _STATIC_TYPES}


class AuditViewer:
    """The ASGI app ``audit_viewer()`` returns. Mount it, and ``close()`` it at shutdown."""

    def __init__(
        self,
        reader: Any,
        engine: Engine,
        database_url: str,
        authorize: Authorize,
        *,
        public_keys: Sequence[str] = (),
        audit: Any,
        owns: Sequence[Any] = (),
        badge_interval: float = 60.0,
        chain_badge: bool = True,
    ) -> None:
        self.reader = reader
        self._engine = engine
        self._authorize = authorize
        self._audit = audit
        self._owns = list(owns)
        self._catalog = WorkspaceCatalog(engine)
        self.badges = (
            BadgeCache(database_url, engine, public_keys, interval=badge_interval)
            if chain_badge
            else None
        )
        self._static = _static()
        self._public_keys = list(public_keys)
        router = Starlette(
            routes=[
                Route("/", self._page, methods=["GET"]),
                Route("/api/events", self._api_events, methods=["GET"]),
                Route("/api/events/{event_id}", self._api_event, methods=["GET"]),
                Route("/export", self._export, methods=["GET"]),
                Route("/static/{name}", self._static_file, methods=["GET"]),
            ],
        )
        self._app = SecurityHeaders(router)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self._app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        # Run standalone (uvicorn app), the viewer owns its shutdown; mounted, the host calls
        # close() from its own lifespan (Starlette does not forward lifespan to mounts).
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await anyio.to_thread.run_sync(self.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ---- public --------------------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record of a view or export so far is stored."""
        return bool(self._audit.flush(timeout))

    def refresh_badges(self) -> None:
        """Verify, now, every workspace a page has shown (the badge thread does it anyway)."""
        if self.badges is not None:
            self.badges.refresh()

    def close(self) -> None:
        if self.badges is not None:
            self.badges.close()
        for owned in self._owns:
            owned.close()
        self._owns.clear()

    # ---- access --------------------------------------------------------------------------

    async def _grant(self, request: Request, *, api: bool) -> Grant:
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
                    f"token:{token.name}",
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

    def _scope(self, grant: Grant, asked: str | None, *, required: bool) -> uuid.UUID | None:
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

    # ---- the record of each look ---------------------------------------------------------

    def _record(
        self,
        who: tuple[str | None, str | None],
        action: str,
        grant: Grant,
        workspace: uuid.UUID | None,
        details: dict[str, Any],
    ) -> None:
        # Never raises and never waits: the writer stores it in the background.
        self._audit.log_audit_event(
            action,
            user_id=grant.actor,
            workspace_id=workspace,
            ip_address=who[0],
            user_agent=who[1],
            resource="audit_log",
            resource_id=None if workspace is None else str(workspace),
            details=details,
        )

    # ---- routes --------------------------------------------------------------------------

    async def _page(self, request: Request) -> Response:
        try:
            grant = await self._grant(request, api=False)
        except Refused as exc:
            return _refused(exc.status)
        q = request.query_params
        root = request.scope.get("root_path", "").rstrip("/")
        try:
            workspace = await anyio.to_thread.run_sync(
                lambda: self._scope(grant, q.get("workspace"), required=False)
            )
        except NotFound:
            return _not_found()
        except FilterError as exc:
            return _plain_error(str(exc), 400)
        back = [b for b in q.getlist("back") if b][-MAX_BACK:]
        cursor = q.get("cursor") or None
        view = PageView(
            root=root,
            workspace=None,
            choices=(),
            all_workspaces=grant.everything,
            filters=Filters(),
            cursor=cursor,
            back=back,
        )
        status = 200
        try:
            view.filters = Filters.parse(q)
            view.limit = _limit(q.get("limit"), _PAGE_SIZE, 200)
        except FilterError as exc:
            view.error, status, view.cursor, view.back = str(exc), 400, None, []
        try:
            await anyio.to_thread.run_sync(self._fill_page, view, grant, workspace, status == 200)
        except NotFound:
            return _not_found()
        if status == 200:
            self._record(
                _who(request),
                "audit_log.viewed",
                grant,
                workspace,
                {"via": "page", "filters": view.filters.describe(), "events": len(view.events)},
            )
        return HTMLResponse(render_page(view), status_code=status)

    def _fill_page(
        self, view: PageView, grant: Grant, workspace: uuid.UUID | None, query: bool
    ) -> None:
        if grant.everything:
            view.choices = self._catalog.all()
        else:
            view.choices = self._catalog.describe(grant.order)
        if workspace is not None:
            view.workspace = next(
                (w for w in view.choices if w.id == workspace), None
            ) or Workspace(workspace)
        view.badge = None if self.badges is None else self.badges.get(workspace)
        view.show_badge = self.badges is not None
        if not query:
            return
        try:
            page = self.reader.events(
                workspace=workspace,
                limit=view.limit,
                cursor=view.cursor,
                **view.filters.reader_kwargs(),
            )
        except InvalidCursor as exc:
            raise NotFound from exc
        view.events = page.items
        view.next_cursor = page.next_cursor

    async def _api_events(self, request: Request) -> Response:
        try:
            grant = await self._grant(request, api=True)
        except Refused as exc:
            return _refused(exc.status)
        q = request.query_params
        try:
            filters = Filters.parse(q)
            limit = _limit(q.get("limit"), _PAGE_SIZE, 1000)
            oldest_first = _flag(q.get("oldest_first"))
        except FilterError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

        def run() -> tuple[uuid.UUID | None, Any]:
            workspace = self._scope(grant, q.get("workspace"), required=not grant.everything)
            try:
                page = self.reader.events(
                    workspace=workspace,
                    limit=limit,
                    cursor=q.get("cursor") or None,
                    oldest_first=oldest_first,
                    **filters.reader_kwargs(),
                )
            except InvalidCursor as exc:
                raise NotFound from exc
            return workspace, page

        try:
            workspace, page = await anyio.to_thread.run_sync(run)
        except NotFound:
            return _not_found(json=True)
        except FilterError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        self._record(
            _who(request),
            "audit_log.viewed",
            grant,
            workspace,
            {"via": "api", "filters": filters.describe(), "events": len(page.items)},
        )
        return JSONResponse(
            {"events": [event_json(e) for e in page.items], "next_cursor": page.next_cursor}
        )

    async def _api_event(self, request: Request) -> Response:
        """One full record with its previous → new diff: what opening a row shows."""
        try:
            grant = await self._grant(request, api=False)
        except Refused as exc:
            return _refused(exc.status)
        try:
            event_id = uuid.UUID(request.path_params["event_id"])
        except ValueError:
            return _not_found(json=True)

        def run() -> tuple[uuid.UUID | None, Any]:
            workspace = self._scope(grant, request.query_params.get("workspace"), required=False)
            event = AuditStore(engine=self._engine).get(event_id)
            if event is None or (workspace is not None and event.workspace_id != workspace):
                raise NotFound
            if workspace is None and not grant.everything:
                raise NotFound
            return workspace, event

        try:
            workspace, event = await anyio.to_thread.run_sync(run)
        except (NotFound, FilterError):
            return _not_found(json=True)
        self._record(
            _who(request),
            "audit_log.viewed",
            grant,
            workspace or event.workspace_id,
            {"via": "record", "event_id": str(event.id), "events": 1},
        )
        return JSONResponse(
            {
                "event": event_json(event),
                "diff": diff(event.previous_value, event.new_value),
            }
        )

    async def _export(self, request: Request) -> Response:
        try:
            grant = await self._grant(request, api=False)
        except Refused as exc:
            return _refused(exc.status)
        q = request.query_params
        fmt = q.get("format", "jsonl")
        try:
            filters = Filters.parse(q)
            if fmt not in ("jsonl", "csv", "bundle"):
                raise FilterError("format: jsonl, csv or bundle")
            workspace = await anyio.to_thread.run_sync(
                lambda: self._scope(grant, q.get("workspace"), required=True)
            )
        except NotFound:
            return _not_found()
        except FilterError as exc:
            return _plain_error(str(exc), 400)
        assert workspace is not None  # required=True
        who = _who(request)

        def record(details: dict[str, Any]) -> None:
            self._record(who, "audit_log.exported", grant, workspace, details)

        if fmt == "bundle":
            return await self._bundle(grant, workspace, filters)
        from .exports import export_response

        return export_response(self, workspace, filters, fmt, record, grant.actor)

    async def _bundle(self, grant: Grant, workspace: uuid.UUID, filters: Filters) -> Response:
        """The self-verifying ZIP of the chain over since/until, written to a temporary file
        (a ZIP's directory comes last) and sent from there."""
        from .._exports import export_bundle
        from .._reader import AuditReader

        others = set(filters.reader_kwargs()) - {"since", "until"}
        if others:
            return _plain_error(
                "bundle: a bundle holds a whole stretch of the chain, so only since and until"
                f" apply (not {', '.join(sorted(others))})",
                400,
            )
        folder = tempfile.mkdtemp(prefix="auditledger-bundle-")
        path = os.path.join(folder, f"audit-{workspace}.zip")
        # The bundle is recorded (audit_log.exported) as this actor, through our recorder.
        reader = AuditReader(engine=self._engine, actor=grant.actor, recorder=self._audit)

        def run() -> None:
            export_bundle(
                reader,
                path,
                workspace=workspace,
                since=filters.since,
                until=filters.until,
                public_keys=list(self._public_keys),
            )

        try:
            await anyio.to_thread.run_sync(run)
        except LookupError:
            shutil.rmtree(folder, ignore_errors=True)
            return _plain_error("bundle: no events in that range", 404)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return FileResponse(
            path,
            media_type="application/zip",
            filename=os.path.basename(path),
            background=BackgroundTask(shutil.rmtree, folder, ignore_errors=True),
        )

    async def _static_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = self._static.get(name)
        if body is None:
            return _not_found()
        return Response(body, media_type=_STATIC_TYPES[name])


def _who(request: Request) -> tuple[str | None, str | None]:
    """The looker's address and user agent: the host's AuditMiddleware knows them best."""
    bound = request.scope.get(_BOUND_AUDIT)
    if bound is not None:
        return getattr(bound, "ip_address", None), getattr(bound, "user_agent", None)
    client = request.client
    return (client.host if client else None), request.headers.get("user-agent")


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _limit(raw: str | None, default: int, most: int) -> int:
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise FilterError(f"limit: a number from 1 to {most}") from exc
    if not 1 <= value <= most:
        raise FilterError(f"limit: a number from 1 to {most}")
    return value


def _flag(raw: str | None) -> bool:
    if raw is None or raw == "":
        return False
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise FilterError("oldest_first: true or false")


def _plain_error(message: str, status: int) -> Response:
    return Response(message + "\n", status_code=status, media_type="text/plain")


def _not_found(*, json: bool = False) -> Response:
    if json:
        return JSONResponse({"error": "not found"}, status_code=404)
    return Response("Not found\n", status_code=404, media_type="text/plain")


def _refused(status: int) -> Response:
    if status == 401:
        return Response(
            "Unauthorized\n",
            status_code=401,
            media_type="text/plain",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Response("Forbidden\n", status_code=403, media_type="text/plain")
