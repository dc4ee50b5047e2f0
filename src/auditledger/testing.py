"""Helpers for your own tests: assert which audit events your code logged.

    from auditledger.testing import capture_audit_events

    def test_login_is_audited():
        with capture_audit_events() as audit:
            my_app.login("U123")
        assert audit.actions() == ["login"]

Events go through the same sanitising and redaction as in production, so what you assert is
what would be stored. Nothing touches a database.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from ._api import default as _default
from ._api.logger import AuditLogger
from ._chain.canonical import Sealed
from ._db.rows import QuarantineRow, Row
from ._events import AuditEvent, QuarantinedEvent, WorkspaceRef
from ._sinks.base import Sink

__all__ = ["CapturingAuditLogger", "capture_audit_events"]

_NAMESPACE = uuid.UUID("9b1f2a3c-4d5e-4f60-8a7b-1c2d3e4f5a6b")


def _loads(value: str | None) -> Any:
    return None if value is None else orjson.loads(value)


class _MemorySink(Sink):
    def __init__(self, events: list[AuditEvent], quarantined: list[QuarantinedEvent]) -> None:
        super().__init__()
        self._events = events
        self._quarantined = quarantined
        self._lock = threading.Lock()

    def write(
        self,
        rows: list[Row],
        quarantined: list[QuarantineRow],
        *,
        replay: bool,
        sealed: list[Sealed] | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> tuple[int, int]:
        with self._lock:
            if replay:
                rows, quarantined, sealed = self.drop_stored(rows, quarantined, sealed)
            if sealed is None:
                rows = self.resolve_workspaces(rows)
            else:
                self.forget_unresolved()
            for r in rows:
                self._events.append(
                    AuditEvent(
                        id=r[0], user_id=r[1], workspace_id=r[2], ip_address=r[3],
                        user_agent=r[4], action=r[5], resource=r[6], resource_id=r[7],
                        details=_loads(r[8]), previous_value=_loads(r[9]),
                        new_value=_loads(r[10]), created_at=r[11], sanitised=_loads(r[12]),
                    )
                )  # fmt: skip
            for q in quarantined:
                self._quarantined.append(QuarantinedEvent(q[0], q[1], orjson.loads(q[2]), q[3]))
            self.workspaces_committed()
        return len(rows), len(quarantined)

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass

    def _existing_workspaces(self, ids: list[uuid.UUID]) -> set[uuid.UUID]:
        return set(ids)  # every workspace exists in a test

    def _ensure_workspaces(self, refs: list[WorkspaceRef]) -> dict[str, uuid.UUID]:
        return {r.key: uuid.uuid5(_NAMESPACE, r.key) for r in refs if r.key is not None}

    def _existing_event_ids(self, ids: list[uuid.UUID]) -> set[uuid.UUID]:
        wanted = set(ids)
        stored = {e.id for e in self._events} | {q.id for q in self._quarantined}
        return wanted & stored


class CapturingAuditLogger(AuditLogger):
    """An ``AuditLogger`` that keeps events in memory instead of a database.

    ``workspace_id`` given as a ``WorkspaceRef`` resolves to a stable uuid5 of its team id.
    """

    def __init__(self, **options: Any) -> None:
        self._events: list[AuditEvent] = []
        self._quarantined: list[QuarantinedEvent] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="auditledger-capture-")
        options.setdefault("flush_interval", 0.05)
        self.database_backend = "memory"
        self._setup(
            lambda: _MemorySink(self._events, self._quarantined),
            Path(self._tmp.name),
            **_with_defaults(options),
        )

    @property
    def events(self) -> list[AuditEvent]:
        """Every event logged so far (flushes first), oldest first."""
        self.flush()
        return list(self._events)

    @property
    def quarantined(self) -> list[QuarantinedEvent]:
        self.flush()
        return list(self._quarantined)

    def actions(self) -> list[str]:
        return [e.action for e in self.events]

    def clear(self) -> None:
        self.flush()
        self._events.clear()
        self._quarantined.clear()

    def close(self, timeout: float | None = None) -> bool:
        ok = super().close(timeout)
        self._tmp.cleanup()
        return ok


def _with_defaults(options: dict[str, Any]) -> dict[str, Any]:
    from ._write.redact import DEFAULT_REDACT_KEYS

    defaults: dict[str, Any] = {
        "queue_size": 10_000,
        "batch_size": 2_000,
        "flush_interval": 0.2,
        "write_timeout": 10.0,
        "spool_max_bytes": 1024**3,
        "write_ahead": False,
        "max_text_length": 1024,
        "max_json_bytes": 65_536,
        "redact_keys": DEFAULT_REDACT_KEYS,
        "shutdown_timeout": 5.0,
        "handle_sigterm": False,
    }
    defaults.update(options)
    return defaults


@contextlib.contextmanager
def capture_audit_events(**options: Any) -> Iterator[CapturingAuditLogger]:
    """Route the module-level functions (``auditledger.audit_login`` ...) to memory."""
    logger = CapturingAuditLogger(**options)
    previous = _default.set_logger(logger)
    try:
        yield logger
    finally:
        _default.set_logger(previous)
        logger.close()
