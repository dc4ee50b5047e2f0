"""The event as readers see it, and references the writer resolves for callers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class WorkspaceRef:
    """A workspace named by its Slack ids instead of its ``workspaces.id``.

    Pass it as ``workspace_id`` from code that knows only Slack's ids (the Bolt integration
    does). The writer resolves it to ``workspaces.id`` in the batch, creating the row for a team
    seen for the first time, so the request path never waits on the database.

    The row's ``team_id`` is Slack's team id; for an org-wide (Enterprise Grid) install, where
    Slack sends no team id, it is the enterprise id.

    A ref that carries a ``name`` or an ``is_active`` also refreshes an existing row (the Slack
    integration sends one on install and uninstall); plain refs only create missing rows, so
    the everyday request path costs no update.
    """

    team_id: str | None
    enterprise_id: str | None = None
    name: str | None = None
    is_active: bool | None = None

    @property
    def key(self) -> str | None:
        """The value stored in ``workspaces.team_id`` for this workspace."""
        return self.team_id or self.enterprise_id

    @property
    def refreshes(self) -> bool:
        """Whether this ref updates an existing row, not only creates a missing one."""
        return self.name is not None or self.is_active is not None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One stored audit event, as read back from the database.

    The attributes are named after the columns of ``audit_logs``; ``seq`` is the event's
    position in its workspace's hash chain (gap-free, in commit order; None only for rows
    stored before chains existed).
    """

    id: uuid.UUID
    action: str
    created_at: datetime
    user_id: str | None = None
    workspace_id: uuid.UUID | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    resource: str | None = None
    resource_id: str | None = None
    details: Any = None
    previous_value: Any = None
    new_value: Any = None
    sanitised: list[dict[str, Any]] | None = None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class QuarantinedEvent:
    """A call that could not be stored as an event, kept with the reason."""

    id: uuid.UUID
    reason: str
    payload: dict[str, Any]
    created_at: datetime
