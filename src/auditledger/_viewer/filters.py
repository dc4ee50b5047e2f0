"""The viewer's filters: read from a query string, checked, handed to ``AuditReader.events``."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

# The investigation API's filters, in the order the page shows them.
FILTER_NAMES: tuple[str, ...] = (
    "user_id",
    "action",
    "action_prefix",
    "resource",
    "resource_id",
    "ip",
    "since",
    "until",
    "text",
)
_MAX_TEXT = 200  # a filter longer than any stored value could match is a mistake or a probe


class FilterError(ValueError):
    """A filter that cannot be applied; the message names it and is safe to show."""


@dataclass(frozen=True)
class Filters:
    user_id: str | None = None
    action: str | None = None
    action_prefix: str | None = None
    resource: str | None = None
    resource_id: str | None = None
    ip: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> Filters:
        """Filters from query parameters; empty values mean "not filtered"."""
        values: dict[str, Any] = {}
        for name in FILTER_NAMES:
            raw = (params.get(name) or "").strip()
            if not raw:
                continue
            if len(raw) > _MAX_TEXT or "\x00" in raw:
                raise FilterError(f"{name}: too long or not text")
            if name in ("since", "until"):
                values[name] = _parse_time(name, raw)
            elif name == "ip":
                try:
                    ipaddress.ip_network(raw, strict=False)
                except ValueError as exc:
                    raise FilterError("ip: not an address or a CIDR network") from exc
                values[name] = raw
            else:
                values[name] = raw
        since, until = values.get("since"), values.get("until")
        if isinstance(since, datetime) and isinstance(until, datetime) and since > until:
            raise FilterError("since: after until, so nothing could match")
        return cls(**values)

    def reader_kwargs(self) -> dict[str, Any]:
        """Only the filters that are set, as ``AuditReader.events`` takes them."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}

    def as_params(self) -> dict[str, str]:
        """The filters as query parameters (links, the form, export URLs)."""
        out: dict[str, str] = {}
        for name, value in self.reader_kwargs().items():
            out[name] = _format_time(value) if isinstance(value, datetime) else str(value)
        return out

    def describe(self) -> dict[str, str]:
        """What the audit record of a view says was asked for."""
        return self.as_params()


def _parse_time(name: str, raw: str) -> datetime:
    text = raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise FilterError(f"{name}: not an ISO 8601 date or time") from exc
    # A date or time without an offset is UTC, as the page's times are.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _format_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
