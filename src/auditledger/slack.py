"""Slack Bolt integration (``App`` and ``AsyncApp``): request-bound helpers, installs, uninstalls.

    from slack_bolt import App
    from slack_bolt.oauth.oauth_settings import OAuthSettings
    from auditledger.slack import callback_options, instrument

    app = App(oauth_settings=OAuthSettings(..., callback_options=callback_options(logger)))
    instrument(app, logger)

    @app.command("/digest")
    def digest(ack, command, context):
        context["audit"].audit_settings_change(
            setting="digest_channel", previous_value=old, new_value=command["text"]
        )
        ack("Saved")

``context["audit"]`` has the same methods as ``AuditLogger`` with ``user_id`` and
``workspace_id`` filled from the request. The workspace is a ``WorkspaceRef`` of Slack's ids,
resolved by the writer thread (never on the request path): ``workspaces.team_id`` holds the
request's team id, or the enterprise id for org-wide installs where Slack sends no team id, and
``workspaces.enterprise_id`` links the workspaces of one Enterprise Grid org.

For ``AsyncApp`` use ``async_callback_options`` (``AsyncApp`` itself needs ``aiohttp``).
Tokens never reach the log: only ids, scopes and flags are copied out of Bolt's objects.
Needs the ``slack`` extra.
"""

from __future__ import annotations

import logging
import sys
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._api.default import default_logger
from ._api.helpers import AuditHelpers
from ._errors import ConfigurationError, MissingExtraError
from ._slack_common import (
    _DISCONNECT_EVENTS,
    CONTEXT_KEY,
    OAUTH_FAILED,
    PROVIDER,
    _audit_disconnect,
    _audit_failed,
    _audit_installed,
    _bind,
    _disconnect_event,
    _safely,
)

try:
    from slack_bolt import App, BoltContext, BoltRequest, BoltResponse
    from slack_bolt.middleware import Middleware
    from slack_bolt.oauth.callback_options import CallbackOptions, FailureArgs, SuccessArgs
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("slack", "slack_bolt") from exc

if TYPE_CHECKING:
    from slack_bolt.async_app import AsyncApp
    from slack_bolt.oauth.async_callback_options import (
        AsyncCallbackOptions,
        AsyncFailureArgs,
        AsyncSuccessArgs,
    )

__all__ = [
    "CONTEXT_KEY",
    "OAUTH_FAILED",
    "PROVIDER",
    "async_callback_options",
    "callback_options",
    "instrument",
]

log = logging.getLogger("auditledger")

_instrumented: weakref.WeakSet[Any] = weakref.WeakSet()
_instrument_lock = threading.Lock()


# ---- instrument ----------------------------------------------------------------------------


def instrument(
    app: App | AsyncApp, logger: AuditHelpers | None = None, *, cleanup: bool = True
) -> None:
    """Audit a Bolt ``App`` or ``AsyncApp``; ``logger=None`` means the default logger.

    - Every request gets ``context["audit"]``, bound to its user and workspace. It survives
      thread-pool listeners and lazy listeners (which deep-copy the context).
    - ``tokens_revoked`` and ``app_uninstalled`` are recorded as ``oauth_disconnected`` in
      middleware, so your own listeners for them still run. Then, with ``cleanup`` and an
      installation store, Bolt's default clean-up deletes the revoked installations, as a
      listener would (in the listener executor, or before the response with
      ``process_before_response``). No need for ``enable_token_revocation_listeners()``.
    - If no listener of yours handles those two events, they are acknowledged anyway (Bolt
      would answer 404 and Slack would retry, recording the uninstall again). The fallback is
      added at the first request, after the listeners registered before it.
    """
    audit: AuditHelpers = default_logger if logger is None else logger
    with _instrument_lock:
        if app in _instrumented:
            raise ConfigurationError("this Bolt app is already instrumented")
        _instrumented.add(app)
    oauth_flow = getattr(app, "oauth_flow", None)
    if oauth_flow is not None and not getattr(
        oauth_flow.settings.callback_options, "audits_installs", False
    ):
        log.warning(
            "auditledger: installs of this Bolt app are not audited; pass "
            "callback_options=auditledger.slack.callback_options() to its OAuth settings"
        )
    if _is_async(app):
        from ._slack_async import AsyncAuditMiddleware

        app.use(AsyncAuditMiddleware(app, audit, cleanup=cleanup))  # type: ignore[arg-type]
    else:
        app.use(_AuditMiddleware(app, audit, cleanup=cleanup))  # type: ignore[arg-type]


def _is_async(app: object) -> bool:
    # Without importing slack_bolt.async_app, which needs aiohttp: an AsyncApp's module is
    # already loaded if one exists.
    module = sys.modules.get("slack_bolt.app.async_app")
    return module is not None and isinstance(app, module.AsyncApp)


class _AuditMiddleware(Middleware):
    def __init__(self, app: App, logger: AuditHelpers, *, cleanup: bool) -> None:
        self._app = app
        self._logger = logger
        self._cleanup = cleanup and app.installation_store is not None
        self._fallback_added = False
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return "auditledger.slack.AuditMiddleware"

    def process(
        self, *, req: BoltRequest, resp: BoltResponse, next: Callable[[], BoltResponse]
    ) -> BoltResponse | None:
        if not self._fallback_added:
            self._add_fallback()
        try:
            req.context[CONTEXT_KEY] = _bind(self._logger, req.context)
            event = _disconnect_event(req.body)
            if event is not None:
                _audit_disconnect(self._logger, req.context, req.body, event)
                if self._cleanup:
                    self._schedule_cleanup(event, req.context)
        except Exception as exc:  # noqa: BLE001 - auditing must never fail a Slack request
            log.error("auditledger: Slack request not audited (%s)", type(exc).__name__)
        return next()

    def _add_fallback(self) -> None:
        with self._lock:
            if self._fallback_added:
                return
            for kind in _DISCONNECT_EVENTS:
                self._app.event(kind)(_acknowledge)
            self._fallback_added = True

    def _schedule_cleanup(self, event: dict[str, Any], context: BoltContext) -> None:
        if event["type"] == "tokens_revoked":
            listener = self._app.default_tokens_revoked_event_listener()
            work: Callable[[], Any] = lambda: listener(event=event, context=context)  # noqa: E731
        else:
            uninstalled = self._app.default_app_uninstalled_event_listener()
            work = lambda: uninstalled(context=context)  # noqa: E731
        if self._app.process_before_response:
            _run_cleanup(work)
        else:
            self._app.listener_runner.listener_executor.submit(_run_cleanup, work)


def _acknowledge() -> None:
    """Fallback listener: the event is already recorded by the middleware."""


def _run_cleanup(work: Callable[[], Any]) -> None:
    try:
        work()
    except Exception as exc:  # noqa: BLE001 - reported, like Bolt's listener errors
        log.error("auditledger: Slack installation clean-up failed (%s)", type(exc).__name__)


# ---- OAuth callback ------------------------------------------------------------------------


class AuditedCallbackOptions(CallbackOptions):
    """``CallbackOptions`` that record the outcome before the page is rendered."""

    audits_installs = True


def callback_options(
    logger: AuditHelpers | None = None,
    success: Callable[[SuccessArgs], BoltResponse] | None = None,
    failure: Callable[[FailureArgs], BoltResponse] | None = None,
) -> CallbackOptions:
    """Bolt ``CallbackOptions`` (for ``App``) that audit the OAuth callback's outcome.

    A completed install is ``oauth_connected`` (creating or refreshing the workspace row: name,
    active again); a failed one is ``oauth_failed`` with Slack's reason. Then ``success`` /
    ``failure`` run, or Bolt's default pages. For ``AsyncApp`` use ``async_callback_options``.
    """
    audit: AuditHelpers = default_logger if logger is None else logger

    def on_success(args: SuccessArgs) -> BoltResponse:
        _safely("install", lambda: _audit_installed(audit, args.request, args.installation))
        return (success or args.default.success)(args)

    def on_failure(args: FailureArgs) -> BoltResponse:
        _safely(
            "install failure",
            lambda: _audit_failed(
                audit, args.request, args.reason, args.error, args.suggested_status_code
            ),
        )
        return (failure or args.default.failure)(args)

    return AuditedCallbackOptions(success=on_success, failure=on_failure)


def async_callback_options(
    logger: AuditHelpers | None = None,
    success: Callable[[AsyncSuccessArgs], Awaitable[BoltResponse]] | None = None,
    failure: Callable[[AsyncFailureArgs], Awaitable[BoltResponse]] | None = None,
) -> AsyncCallbackOptions:
    """``callback_options`` for ``AsyncApp``: Bolt ``AsyncCallbackOptions``, same records."""
    from ._slack_async import audited_async_callback_options

    audit: AuditHelpers = default_logger if logger is None else logger
    return audited_async_callback_options(audit, success, failure)
