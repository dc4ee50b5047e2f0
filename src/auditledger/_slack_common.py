"""What the sync and async Slack integrations share: what is read from a request and what
is recorded. Both ``slack`` and ``_slack_async`` import it; neither imports the other at
module level, so there is no import cycle. Needs the ``slack`` extra only for its types."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._actions import AuditAction
from ._api.helpers import AuditHelpers, BoundAuditLogger
from ._events import WorkspaceRef

if TYPE_CHECKING:
    from slack_bolt import BoltContext
    from slack_sdk.oauth.installation_store import Installation

log = logging.getLogger("auditledger")

CONTEXT_KEY = "audit"
"""Where the request-bound helper lives in Bolt's ``context``."""

OAUTH_FAILED = "oauth_failed"
"""The application action recorded for an install that did not complete."""

PROVIDER = "slack"
"""``resource_id`` of the OAuth events this module records (``resource`` is ``oauth``)."""

_DISCONNECT_EVENTS = ("tokens_revoked", "app_uninstalled")
_MAX_REASON = 100


# ---- what is read from a request -----------------------------------------------------------


def _workspace(context: BoltContext, *, is_active: bool | None = None) -> WorkspaceRef | None:
    team_id, enterprise_id = context.team_id, context.enterprise_id
    if team_id is None and enterprise_id is None:
        return None
    if context.is_enterprise_install and enterprise_id is not None:
        # One org-wide install is one tenant: its commands carry the user's team id but its
        # events only the enterprise id, so both must key on the enterprise, or one install
        # splits across two workspace rows (and an uninstall deactivates only one).
        return WorkspaceRef(None, enterprise_id, is_active=is_active)
    return WorkspaceRef(team_id, enterprise_id, is_active=is_active)


def _bind(logger: AuditHelpers, context: BoltContext) -> BoundAuditLogger:
    # No IP address or user agent: Slack's servers send these requests, not the user.
    return BoundAuditLogger(logger, user_id=context.user_id, workspace_id=_workspace(context))


def _disconnect_event(body: Any) -> dict[str, Any] | None:
    if not isinstance(body, dict) or body.get("type") != "event_callback":
        return None
    event = body.get("event")
    if isinstance(event, dict) and event.get("type") in _DISCONNECT_EVENTS:
        return event
    return None


def _ids(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _audit_disconnect(
    logger: AuditHelpers, context: BoltContext, body: dict[str, Any], event: dict[str, Any]
) -> None:
    kind = event["type"]
    details: dict[str, Any] = {"slack_event": kind, "event_id": body.get("event_id")}
    if kind == "tokens_revoked":
        # Key names avoid "token": the redactor would (rightly) hide anything under them.
        revoked = event.get("tokens")
        revoked = revoked if isinstance(revoked, dict) else {}
        details["revoked_user_ids"] = _ids(revoked.get("oauth"))
        details["revoked_bot_user_ids"] = _ids(revoked.get("bot"))
    logger.log_audit_event(
        AuditAction.OAUTH_DISCONNECTED,
        user_id=context.user_id,
        # An uninstall deactivates the workspace row; a revoked token alone does not.
        workspace_id=_workspace(context, is_active=False if kind == "app_uninstalled" else None),
        resource="oauth",
        resource_id=PROVIDER,
        details=details,
    )


def _request_context(request: Any, logger: AuditHelpers) -> BoundAuditLogger:
    """The installer's browser: an ``audit`` helper passed in by the web layer, if any.

    Bolt's OAuth routes bypass its middleware and ``BoltRequest`` has no client address; with
    ``auditledger.web`` in front, pass ``addition_context_properties={"audit":
    get_audit(request)}`` to the Starlette adapter to record the installer's address.
    """
    bound = request.context.get(CONTEXT_KEY)
    if isinstance(bound, BoundAuditLogger):
        return BoundAuditLogger(logger, ip_address=bound.ip_address, user_agent=bound.user_agent)
    agents = request.headers.get("user-agent") or [None]
    return BoundAuditLogger(logger, user_agent=agents[0])


def _audit_installed(logger: AuditHelpers, request: Any, installation: Installation) -> None:
    name = installation.team_name if installation.team_id else installation.enterprise_name
    details = {
        "app_id": installation.app_id,
        "is_enterprise_install": bool(installation.is_enterprise_install),
        "team_id": installation.team_id,
        "enterprise_id": installation.enterprise_id,
        "bot_user_id": installation.bot_user_id,
        "bot_scopes": list(installation.bot_scopes or []),
        "user_scopes": list(installation.user_scopes or []),
    }
    _request_context(request, logger).log_audit_event(
        AuditAction.OAUTH_CONNECTED,
        user_id=installation.user_id,
        workspace_id=WorkspaceRef(
            installation.team_id, installation.enterprise_id, name=name, is_active=True
        ),
        resource="oauth",
        resource_id=PROVIDER,
        details=details,
    )


def _audit_failed(
    logger: AuditHelpers, request: Any, reason: str, error: Exception | None, status: int
) -> None:
    details: dict[str, Any] = {
        # Slack's own reasons are short codes; the query string's "error" is the browser's.
        "reason": str(reason)[:_MAX_REASON],
        "status": status,
    }
    if error is not None:
        details["error"] = type(error).__name__  # never str(error): it may quote a secret
    _request_context(request, logger).log_audit_event(
        OAUTH_FAILED, resource="oauth", resource_id=PROVIDER, details=details
    )


def _safely(what: str, record: Callable[[], None]) -> None:
    try:
        record()
    except Exception as exc:  # noqa: BLE001 - the install must go on
        log.error("auditledger: Slack %s not audited (%s)", what, type(exc).__name__)
