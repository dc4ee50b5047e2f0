"""Small helpers shared by the tests (not fixtures)."""

from __future__ import annotations

from auditledger import AuditEvent, AuditStore


def stored(url: str, **filters: object) -> list[AuditEvent]:
    with AuditStore(url) as store:
        return store.events(limit=100_000, **filters)  # type: ignore[arg-type]


def by_action(events: list[AuditEvent]) -> dict[str, list[AuditEvent]]:
    out: dict[str, list[AuditEvent]] = {}
    for e in events:
        out.setdefault(e.action, []).append(e)
    return out
