"""The helper methods of the seed (the in-app audit module this library replaces, whose
names and parameters it keeps), shared by AuditLogger, the default logger and bound helpers.

Each helper maps to one ``log_audit_event`` call. ``user_id`` and ``workspace_id`` default to
None so that request-bound helpers (Slack, web) can fill them from the request.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import UTC, datetime
from typing import Any

from .._actions import AuditAction

WorkspaceId = Any  # uuid.UUID | str | WorkspaceRef | None; anything else is sanitised


class AuditHelpers(ABC):
    @abstractmethod
    def log_audit_event(
        self,
        action: AuditAction | str,
        *,
        user_id: str | None = None,
        workspace_id: WorkspaceId = None,
        ip_address: str | None = None,
        user_agent: str | None = None,
        resource: str | None = None,
        resource_id: str | None = None,
        details: Any = None,
        previous_value: Any = None,
        new_value: Any = None,
    ) -> None:
        """Record one event. Returns at once; never raises."""

    def _user(self, user_id: str | None) -> str | None:
        """The acting user: request-bound helpers fill it before resource_id is derived."""
        return user_id

    def audit_login(
        self,
        user_id: str | None = None,
        workspace_id: WorkspaceId = None,
        ip_address: str | None = None,
        user_agent: str | None = None,
    ) -> None:
        user_id = self._user(user_id)
        self.log_audit_event(
            AuditAction.LOGIN,
            user_id=user_id,
            workspace_id=workspace_id,
            ip_address=ip_address,
            user_agent=user_agent,
            resource="user",
            resource_id=user_id,
        )

    def audit_logout(
        self,
        user_id: str | None = None,
        workspace_id: WorkspaceId = None,
        ip_address: str | None = None,
        user_agent: str | None = None,
    ) -> None:
        user_id = self._user(user_id)
        self.log_audit_event(
            AuditAction.LOGOUT,
            user_id=user_id,
            workspace_id=workspace_id,
            ip_address=ip_address,
            user_agent=user_agent,
            resource="user",
            resource_id=user_id,
        )

    def audit_data_export(
        self, user_id: str | None = None, workspace_id: WorkspaceId = None
    ) -> None:
        user_id = self._user(user_id)
        self.log_audit_event(
            AuditAction.DATA_EXPORT_REQUESTED,
            user_id=user_id,
            workspace_id=workspace_id,
            resource="user",
            resource_id=user_id,
            details={"requested_at": _now_iso()},
        )

    def audit_data_deletion(
        self, user_id: str | None = None, workspace_id: WorkspaceId = None
    ) -> None:
        user_id = self._user(user_id)
        self.log_audit_event(
            AuditAction.DATA_DELETE_REQUESTED,
            user_id=user_id,
            workspace_id=workspace_id,
            resource="user",
            resource_id=user_id,
            details={"requested_at": _now_iso()},
        )

    def audit_settings_change(
        self,
        user_id: str | None = None,
        workspace_id: WorkspaceId = None,
        setting: str | None = None,
        previous_value: Any = None,
        new_value: Any = None,
    ) -> None:
        self.log_audit_event(
            AuditAction.SETTINGS_CHANGED,
            user_id=user_id,
            workspace_id=workspace_id,
            resource="settings",
            resource_id=setting,
            previous_value=previous_value,
            new_value=new_value,
        )

    def audit_oauth_connected(
        self,
        user_id: str | None = None,
        workspace_id: WorkspaceId = None,
        provider: str | None = None,
    ) -> None:
        self.log_audit_event(
            AuditAction.OAUTH_CONNECTED,
            user_id=user_id,
            workspace_id=workspace_id,
            resource="oauth",
            resource_id=provider,
        )

    def audit_oauth_disconnected(
        self,
        user_id: str | None = None,
        workspace_id: WorkspaceId = None,
        provider: str | None = None,
    ) -> None:
        self.log_audit_event(
            AuditAction.OAUTH_DISCONNECTED,
            user_id=user_id,
            workspace_id=workspace_id,
            resource="oauth",
            resource_id=provider,
        )

    def audit_subscription_created(
        self, workspace_id: WorkspaceId = None, plan_id: str | None = None, details: Any = None
    ) -> None:
        self.log_audit_event(
            AuditAction.SUBSCRIPTION_CREATED,
            workspace_id=workspace_id,
            resource="subscription",
            resource_id=plan_id,
            details=details,
        )

    def audit_subscription_cancelled(
        self, workspace_id: WorkspaceId = None, details: Any = None
    ) -> None:
        self.log_audit_event(
            AuditAction.SUBSCRIPTION_CANCELLED,
            workspace_id=workspace_id,
            resource="subscription",
            details=details,
        )

    def audit_admin_action(
        self,
        user_id: str | None = None,
        workspace_id: WorkspaceId = None,
        description: str | None = None,
        details: Any = None,
    ) -> None:
        # Nested rather than merged, so a caller's own "description" key is never lost.
        payload: dict[str, Any] = {"description": description}
        if details is not None:
            payload["details"] = details
        self.log_audit_event(
            AuditAction.ADMIN_ACTION,
            user_id=user_id,
            workspace_id=workspace_id,
            resource="admin",
            details=payload,
        )


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class BoundAuditLogger(AuditHelpers):
    """Helpers bound to one request: who, where and from which address are filled in.

    Integrations create these (``context["audit"]`` in Bolt, ``get_audit(request)`` on the
    web); values passed explicitly to a method win over the bound ones.
    """

    __slots__ = ("_logger", "ip_address", "user_agent", "user_id", "workspace_id")

    def __init__(
        self,
        logger: AuditHelpers,
        *,
        user_id: str | None = None,
        workspace_id: WorkspaceId = None,
        ip_address: str | None = None,
        user_agent: str | None = None,
    ) -> None:
        self._logger = logger
        self.user_id = user_id
        self.workspace_id = workspace_id
        self.ip_address = ip_address
        self.user_agent = user_agent

    def log_audit_event(
        self,
        action: AuditAction | str,
        *,
        user_id: str | None = None,
        workspace_id: WorkspaceId = None,
        ip_address: str | None = None,
        user_agent: str | None = None,
        resource: str | None = None,
        resource_id: str | None = None,
        details: Any = None,
        previous_value: Any = None,
        new_value: Any = None,
    ) -> None:
        self._logger.log_audit_event(
            action,
            user_id=self.user_id if user_id is None else user_id,
            workspace_id=self.workspace_id if workspace_id is None else workspace_id,
            ip_address=self.ip_address if ip_address is None else ip_address,
            user_agent=self.user_agent if user_agent is None else user_agent,
            resource=resource,
            resource_id=resource_id,
            details=details,
            previous_value=previous_value,
            new_value=new_value,
        )

    def _user(self, user_id: str | None) -> str | None:
        return self.user_id if user_id is None else user_id

    def __deepcopy__(self, memo: dict[int, Any]) -> BoundAuditLogger:
        # Bolt's lazy listeners deep-copy the context: share the logger, copy the ids.
        return BoundAuditLogger(
            self._logger,
            user_id=self.user_id,
            workspace_id=self.workspace_id,
            ip_address=self.ip_address,
            user_agent=self.user_agent,
        )

    def __repr__(self) -> str:
        return f"BoundAuditLogger(user_id={self.user_id!r}, workspace_id={self.workspace_id!r})"


__all__ = ["AuditHelpers", "BoundAuditLogger"]
