"""write_ahead=True: batches that wait in the write-ahead log behind the spool still land."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditledger import AuditLogger, WorkspaceRef
from auditledger._write import spool as _spool
from tests.helpers import stored


def _log(audit: AuditLogger, n: int) -> None:
    for i in range(n):
        audit.log_audit_event("login", user_id=f"U{i}", details={"seq": i, "pad": "x" * 200})


def test_batches_deferred_behind_a_rotated_segment_are_stored(
    db_url: str, spool_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sealed (rotated) write-ahead segment makes the next batches wait behind it in the
    # open segment; replay used to discard that segment with them (the benchmark lost 6-20%).
    monkeypatch.setattr(_spool, "MAX_SEGMENT_BYTES", 32 * 1024)
    n = 3_000
    with AuditLogger(
        db_url, spool_dir=spool_dir, write_ahead=True, batch_size=100, queue_size=n + 1
    ) as audit:
        _log(audit, n)
        assert audit.flush(60)
        assert len({e.user_id for e in stored(db_url)}) == n
    assert len(stored(db_url)) == n


def test_batches_deferred_behind_overflow_are_stored(sqlite_url: str, spool_dir: Path) -> None:
    # Callers spill to the spool when the queue is full; the writer's next batches then wait
    # in the write-ahead log, which must be replayed, not discarded.
    n = 3_000
    with AuditLogger(
        sqlite_url, spool_dir=spool_dir, write_ahead=True, batch_size=100, queue_size=200
    ) as audit:
        _log(audit, n)
        assert audit.flush(60)
        assert len(stored(sqlite_url)) == n
    assert len({e.user_id for e in stored(sqlite_url)}) == n


def test_write_ahead_without_room_in_the_spool_still_writes_and_drops_nothing(
    db_url: str, spool_dir: Path
) -> None:
    with AuditLogger(db_url, spool_dir=spool_dir, write_ahead=True, spool_max_bytes=0) as audit:
        for i in range(10):
            audit.audit_login(f"U{i}", None)
        assert audit.flush(30)
        stats = audit.stats()
    assert (stats.written, stats.dropped) == (10, {})


def test_text_json_cannot_carry_still_reaches_the_spool_and_the_database(
    db_url: str, spool_dir: Path
) -> None:
    # With write_ahead every batch is spooled first: a lone surrogate in a text field, or an
    # object in a workspace ref, made the spool record raise and the whole batch vanished
    # while flush() said True.
    with AuditLogger(db_url, spool_dir=spool_dir, write_ahead=True) as audit:
        audit.audit_login("U\ud800", WorkspaceRef("T\ud800"), ip_address="192.0.2.1")
        audit.audit_login("U2", WorkspaceRef({"not": "a string"}))  # type: ignore[arg-type]
        for i in range(5):
            audit.audit_login(f"fine{i}", None)
        assert audit.flush(30)
        stats = audit.stats()
    assert (stats.written, stats.quarantined, stats.dropped) == (7, 0, {})
    events = {e.user_id: e for e in stored(db_url)}
    assert set(events) == {"U\ufffd", "U2", *(f"fine{i}" for i in range(5))}
    changes = {(n["field"], n["change"]) for n in events["U\ufffd"].sanitised or []}
    assert ("user_id", "invalid characters (lone surrogates) replaced") in changes
    assert list(spool_dir.glob("*.seg")) == []
