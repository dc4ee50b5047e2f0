"""An event as exported: its columns under the seed's names, JSON-ready, in one place."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .._events import AuditEvent

# The seed's columns, in the seed's order: the CSV header and the JSONL keys.
SEED_COLUMNS: tuple[str, ...] = (
    "id",
    "user_id",
    "workspace_id",
    "ip_address",
    "user_agent",
    "action",
    "resource",
    "resource_id",
    "details",
    "previous_value",
    "new_value",
    "created_at",
)
JSON_COLUMNS = frozenset({"details", "previous_value", "new_value", "sanitised"})


def utc_text(value: datetime) -> str:
    """ISO 8601 in UTC with ``Z`` and always six digits of microseconds (sortable as text)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_record(event: AuditEvent) -> dict[str, Any]:
    """Every column of the event (JSON values as stored), plus ``sanitised`` and ``seq``."""
    return {
        "id": str(event.id),
        "user_id": event.user_id,
        "workspace_id": None if event.workspace_id is None else str(event.workspace_id),
        "ip_address": event.ip_address,
        "user_agent": event.user_agent,
        "action": event.action,
        "resource": event.resource,
        "resource_id": event.resource_id,
        "details": event.details,
        "previous_value": event.previous_value,
        "new_value": event.new_value,
        "created_at": utc_text(event.created_at),
        "sanitised": event.sanitised,
        "seq": event.seq,
    }
