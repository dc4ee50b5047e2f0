"""The mountable viewer: its routes, and the record of every look.

Every route first asks the gate (``gate.py``) who is looking and which workspace they may read;
anything else is the same 404. Database work runs in worker threads, never on the event loop.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from importlib import resources
from typing import Any

import anyio.to_thread
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .._actions import LibraryAction
from .._errors import InvalidCursor
from .._read.store import AuditStore
from .access import Authorize
from .badge import BadgeCache
from .filters import FilterError, Filters
from .gate import ACCESS_KEY, Gate, Grant, NotFound, Refused
from .headers import SecurityHeaders
from .page import MAX_BACK, PageView, render_page
from .records import diff, event_json
from .responses import flag, limit, not_found, plain_error, refused, who
from .workspaces import Workspace, WorkspaceCatalog

log = logging.getLogger("auditledger")

__all__ = ["ACCESS_KEY", "AuditViewer"]

_STATIC_TYPES = {"viewer.js": "text/javascript", "viewer.css": "text/css"}
_PAGE_SIZE = 50


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
        self._audit = audit
        self._owns = list(owns)
        self._catalog = WorkspaceCatalog(engine)
        self._gate = Gate(engine, self._catalog, authorize)
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
            LibraryAction(action),
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
            grant = await self._gate.grant(request, api=False)
        except Refused as exc:
            return refused(exc.status)
        q = request.query_params
        root = request.scope.get("root_path", "").rstrip("/")
        try:
            workspace = await anyio.to_thread.run_sync(
                lambda: self._gate.scope(grant, q.get("workspace"), required=False)
            )
        except NotFound:
            return not_found()
        except FilterError as exc:
            return plain_error(str(exc), 400)
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
            view.limit = limit(q.get("limit"), _PAGE_SIZE, 200)
        except FilterError as exc:
            view.error, status, view.cursor, view.back = str(exc), 400, None, []
        try:
            await anyio.to_thread.run_sync(self._fill_page, view, grant, workspace, status == 200)
        except NotFound:
            return not_found()
        if status == 200:
            self._record(
                who(request),
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
            grant = await self._gate.grant(request, api=True)
        except Refused as exc:
            return refused(exc.status)
        q = request.query_params
        try:
            filters = Filters.parse(q)
            size = limit(q.get("limit"), _PAGE_SIZE, 1000)
            oldest_first = flag(q.get("oldest_first"))
        except FilterError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

        def run() -> tuple[uuid.UUID | None, Any]:
            workspace = self._gate.scope(grant, q.get("workspace"), required=not grant.everything)
            try:
                page = self.reader.events(
                    workspace=workspace,
                    limit=size,
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
            return not_found(json=True)
        except FilterError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        self._record(
            who(request),
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
            grant = await self._gate.grant(request, api=False)
        except Refused as exc:
            return refused(exc.status)
        try:
            event_id = uuid.UUID(request.path_params["event_id"])
        except ValueError:
            return not_found(json=True)

        def run() -> tuple[uuid.UUID | None, Any]:
            workspace = self._gate.scope(
                grant, request.query_params.get("workspace"), required=False
            )
            event = AuditStore(engine=self._engine).get(event_id)
            if event is None or (workspace is not None and event.workspace_id != workspace):
                raise NotFound
            if workspace is None and not grant.everything:
                raise NotFound
            return workspace, event

        try:
            workspace, event = await anyio.to_thread.run_sync(run)
        except (NotFound, FilterError):
            return not_found(json=True)
        self._record(
            who(request),
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
            grant = await self._gate.grant(request, api=False)
        except Refused as exc:
            return refused(exc.status)
        q = request.query_params
        fmt = q.get("format", "jsonl")
        try:
            filters = Filters.parse(q)
            if fmt not in ("jsonl", "csv", "bundle"):
                raise FilterError("format: jsonl, csv or bundle")
            workspace = await anyio.to_thread.run_sync(
                lambda: self._gate.scope(grant, q.get("workspace"), required=True)
            )
        except NotFound:
            return not_found()
        except FilterError as exc:
            return plain_error(str(exc), 400)
        assert workspace is not None  # required=True
        looker = who(request)

        def record(details: dict[str, Any]) -> None:
            self._record(looker, "audit_log.exported", grant, workspace, details)

        if fmt == "bundle":
            from .exports import bundle_response

            return await bundle_response(
                self._engine, self._audit, self._public_keys, grant.actor, workspace, filters
            )
        from .exports import export_response

        return export_response(self.reader, workspace, filters, fmt, record, grant.actor)

    async def _static_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = self._static.get(name)
        if body is None:
            return not_found()
        return Response(body, media_type=_STATIC_TYPES[name])
