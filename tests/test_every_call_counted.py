"""Every call ends stored, quarantined or counted, whatever its values do when touched."""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any

from auditledger import AuditLogger, AuditStore
from tests.helpers import stored


class RaisingStr(str):
    def __str__(self) -> str:
        raise RuntimeError("__str__ refused")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ refused")


class RaisingDict(dict[str, Any]):
    def values(self) -> Any:
        raise RuntimeError("values refused")

    def items(self) -> Any:
        raise RuntimeError("items refused")

    def keys(self) -> Any:
        raise RuntimeError("keys refused")


class LyingClass:
    """isinstance() itself raises on it: __class__ is a property that refuses."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        raise RuntimeError("__class__ refused")


def _deep(levels: int, leaf: object) -> object:
    value: object = leaf
    for _ in range(levels):
        value = {"d": value}
    return value


def test_hostile_values_are_stored_or_quarantined_never_lost(db_url: str, spool_dir: Path) -> None:
    calls = 0
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        audit.log_audit_event(RaisingStr("login"), user_id="U-str-action")
        audit.log_audit_event("login", user_id="U-dict", details=RaisingDict(a=1, b=None))
        audit.log_audit_event("login", user_id=RaisingStr("U-str-user"))
        audit.log_audit_event("login", user_id="U-lying", workspace_id=LyingClass())
        audit.log_audit_event("login", user_id="U-lying-details", details={"x": LyingClass()})
        audit.log_audit_event(LyingClass(), user_id="U-lying-action")  # type: ignore[arg-type]
        calls = 6
        assert audit.flush(30)
        stats = audit.stats()
    assert stats.enqueued == calls
    assert stats.dropped == {}
    events = {e.user_id: e for e in stored(db_url)}
    assert events["U-str-action"].action == "login"
    assert events["U-dict"].details == {"a": 1, "b": None}
    assert events["U-str-user"].action == "login"
    assert events["U-lying"].workspace_id is None
    assert events["U-lying"].sanitised
    assert "U-lying-details" in events
    with AuditStore(db_url) as store:
        quarantined = store.quarantined()
    assert len(events) + len(quarantined) == calls
    assert stats.written + stats.quarantined == calls


def test_a_deep_nan_and_keys_that_collide_are_noted(db_url: str, spool_dir: Path) -> None:
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        audit.log_audit_event("login", user_id="deep", details=_deep(100, math.nan))
        audit.log_audit_event("login", user_id="deep-inf", details=[_deep(70, -math.inf)])
        audit.log_audit_event("login", user_id="keys", details={1: "a", "1": "b", "k": 2})
        audit.log_audit_event("login", user_id="uuid-keys", details={uuid.UUID(int=1): 1})
        assert audit.flush(30)
    events = {e.user_id: e for e in stored(db_url)}
    for user in ("deep", "deep-inf"):
        changes = [n["change"] for n in events[user].sanitised or []]
        assert any("NaN or an infinity" in c for c in changes), changes
    keys = events["keys"]
    assert keys.details == {"1": "b", "k": 2}
    assert any("overwritten" in n["change"] for n in keys.sanitised or [])
    assert not any("overwritten" in n["change"] for n in events["uuid-keys"].sanitised or [])
