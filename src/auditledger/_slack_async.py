"""The ``AsyncApp`` half of ``auditledger.slack``, imported only by asyncio apps.

slack_bolt's async modules pull in aiohttp; keeping them here lets ``App`` users import
``auditledger.slack`` without it. The rows recorded are the same as for ``App``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt import BoltContext, BoltResponse

from ._api.helpers import AuditHelpers
from ._slack_common import (
    _DISCONNECT_EVENTS,
    CONTEXT_KEY,
    _audit_disconnect,
    _audit_failed,
    _audit_installed,
    _bind,
    _disconnect_event,
    _safely,
)

try:
    from slack_bolt.async_app import AsyncApp
    from slack_bolt.middleware.async_middleware import AsyncMiddleware
    from slack_bolt.oauth.async_callback_options import (
        AsyncCallbackOptions,
        AsyncFailureArgs,
        AsyncSuccessArgs,
    )
    from slack_bolt.request.async_request import AsyncBoltRequest
except ImportError as exc:  # pragma: no cover - exercised only without aiohttp
    from ._errors import MissingExtraError

    raise MissingExtraError("slack", "aiohttp (needed by slack_bolt's AsyncApp)") from exc

log = logging.getLogger("auditledger")


class AsyncAuditMiddleware(AsyncMiddleware):
    def __init__(self, app: AsyncApp, logger: AuditHelpers, *, cleanup: bool) -> None:
        self._app = app
        self._logger = logger
        self._cleanup = cleanup and app.installation_store is not None
        self._fallback_added = False
        # Clean-up tasks run past the response; the loop keeps only weak references to tasks.
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        return "auditledger.slack.AsyncAuditMiddleware"

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],
    ) -> BoltResponse | None:
        if not self._fallback_added:
            # One event loop thread: no lock needed between the check and the update.
            for kind in _DISCONNECT_EVENTS:
                self._app.event(kind)(_acknowledge)
            self._fallback_added = True
        try:
            req.context[CONTEXT_KEY] = _bind(self._logger, req.context)  # type: ignore[arg-type]
            event = _disconnect_event(req.body)
            if event is not None:
                _audit_disconnect(self._logger, req.context, req.body, event)  # type: ignore[arg-type]
                if self._cleanup:
                    await self._cleanup_installations(event, req.context)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - auditing must never fail a Slack request
            log.error("auditledger: Slack request not audited (%s)", type(exc).__name__)
        return await next()

    async def _cleanup_installations(self, event: dict[str, Any], context: BoltContext) -> None:
        if event["type"] == "tokens_revoked":
            revoked = self._app.default_tokens_revoked_event_listener()
            work: Awaitable[Any] = revoked(event=event, context=context)
        else:
            uninstalled = self._app.default_app_uninstalled_event_listener()
            work = uninstalled(context=context)
        if self._app.process_before_response:
            await _run_cleanup(work)
            return
        task = asyncio.ensure_future(_run_cleanup(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _acknowledge() -> None:
    """Fallback listener: the event is already recorded by the middleware."""


async def _run_cleanup(work: Awaitable[Any]) -> None:
    try:
        await work
    except Exception as exc:  # noqa: BLE001 - reported, like Bolt's listener errors
        log.error("auditledger: Slack installation clean-up failed (%s)", type(exc).__name__)


class AuditedAsyncCallbackOptions(AsyncCallbackOptions):
    audits_installs = True


def audited_async_callback_options(
    audit: AuditHelpers,
    success: Callable[[AsyncSuccessArgs], Awaitable[BoltResponse]] | None,
    failure: Callable[[AsyncFailureArgs], Awaitable[BoltResponse]] | None,
) -> AsyncCallbackOptions:
    async def on_success(args: AsyncSuccessArgs) -> BoltResponse:
        _safely("install", lambda: _audit_installed(audit, args.request, args.installation))
        return await (success or args.default.success)(args)

    async def on_failure(args: AsyncFailureArgs) -> BoltResponse:
        _safely(
            "install failure",
            lambda: _audit_failed(
                audit, args.request, args.reason, args.error, args.suggested_status_code
            ),
        )
        return await (failure or args.default.failure)(args)

    return AuditedAsyncCallbackOptions(success=on_success, failure=on_failure)
