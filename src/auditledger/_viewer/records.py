"""Events as the viewer shows them: JSON with the seed's column names, a summary, a diff."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

# The seed's columns, in its order: the API's keys and the full record's rows.
COLUMNS: tuple[str, ...] = (
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
_MISSING = object()
_SUMMARY_WIDTH = 90


def iso_utc(value: datetime) -> str:
    """ISO 8601 in UTC with ``Z``: what the API returns and what the page converts."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_json(event: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in COLUMNS:
        value = getattr(event, name)
        if name == "created_at":
            value = iso_utc(value)
        elif name in ("id", "workspace_id") and value is not None:
            value = str(value)
        out[name] = value
    return out


def compact(value: Any) -> str:
    """A JSON value as one line of text (the table, the diff)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def summary(event: Any) -> str:
    """One line saying what happened beyond the action."""
    changes = diff(event.previous_value, event.new_value)
    if changes:
        text = "; ".join(
            f"{c['path'] or 'value'}: {c['previous'] or '∅'} → {c['new'] or '∅'}" for c in changes
        )
    else:
        text = compact(event.details)
    return text if len(text) <= _SUMMARY_WIDTH else text[: _SUMMARY_WIDTH - 1] + "…"


def diff(previous: Any, new: Any) -> list[dict[str, str]]:
    """Only what changed from ``previous`` to ``new``, one entry per changed path.

    Objects are compared key by key (nested keys joined with dots); anything else is one value.
    Empty when nothing was recorded on either side.
    """
    if previous is None and new is None:
        return []
    before, after = _flatten(previous), _flatten(new)
    out: list[dict[str, str]] = []
    for path in sorted(before.keys() | after.keys()):
        old, now = before.get(path, _MISSING), after.get(path, _MISSING)
        if old == now:
            continue
        change = "added" if old is _MISSING else "removed" if now is _MISSING else "changed"
        out.append(
            {
                "path": path,
                "change": change,
                "previous": _shown(old),
                "new": _shown(now),
            }
        )
    return out


def _shown(value: Any) -> str:
    if value is _MISSING:
        return ""
    return "null" if value is None else orjson.dumps(value).decode()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if value is None and not prefix:
        return {}
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}
