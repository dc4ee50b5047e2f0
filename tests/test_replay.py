"""Replaying a batch whose outcome was unknown stores each event exactly once."""

from __future__ import annotations

import sqlite3
import time
from enum import Enum
from pathlib import Path

from sqlalchemy.engine import make_url

from auditledger import AuditLogger, WorkspaceRef, verify_log
from auditledger._ids import uuid7_batch
from auditledger._write.spool_frames import EVENT, frame
from tests.helpers import payloads, spool_segment, stored


def test_replayed_events_that_already_reached_the_database_are_not_stored_twice(
    db_url: str, spool_dir: Path
) -> None:
    ids = uuid7_batch([time.time_ns()] * 15)
    first = [(ids[i], f"user-{i}") for i in range(10)]
    spool_segment(spool_dir, first, url=db_url)
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        assert audit.flush(30)
        assert audit.stats().replayed == 10
    # The same ten again (their commit outcome was unknown), plus five new ones.
    spool_segment(spool_dir, first + [(ids[i], f"user-{i}") for i in range(10, 15)], url=db_url)
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        assert audit.flush(30)
        assert audit.stats().replayed == 15
    events = stored(db_url)
    assert sorted(e.id for e in events) == sorted(ids)
    assert all(e.details == {"replayed": True} for e in events)
    assert list(spool_dir.glob("*.seg")) == []


def test_a_torn_last_record_does_not_poison_the_segment(db_url: str, spool_dir: Path) -> None:
    ids = uuid7_batch([time.time_ns()] * 3)
    spool_segment(spool_dir, [(i, "torn") for i in ids], url=db_url)
    (segment,) = spool_dir.glob("*.seg")
    data = segment.read_bytes()
    segment.write_bytes(data[:-7])  # a crash in the middle of appending the last record
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        assert audit.flush(30)
    assert sorted(e.id for e in stored(db_url)) == sorted(ids[:2])


def test_an_unreadable_record_costs_that_record_only(
    db_url: str, spool_dir: Path, internal_errors: object
) -> None:
    # Intact framing, a payload that is not an event (a bug of some older version, say):
    # replay cannot skip it silently, nor retry it forever holding later events back.
    ids = uuid7_batch([time.time_ns()] * 7)
    events = [(i, f"U{n}") for n, i in enumerate(ids)]
    path = spool_segment(spool_dir, events[:4], then=[b"[1, 2"], url=db_url)
    with path.open("ab") as f:  # and three events behind it
        f.write(b"".join(frame(EVENT, p) for p in payloads(events[4:])))
    with AuditLogger(db_url, spool_dir=spool_dir, batch_size=3) as audit:
        assert not audit.flush(30)  # the flush says something went missing
        stats = audit.stats()
    assert sorted(e.id for e in stored(db_url)) == sorted(ids)
    assert stats.replayed == 7
    assert stats.dropped == {"unreadable_record": 1}
    (corrupt,) = spool_dir.glob("*.corrupt")
    assert b"[1, 2" in corrupt.read_bytes()
    assert list(spool_dir.glob("*.seg")) == []
    internal_errors.records.clear()  # type: ignore[attr-defined]  # reported at ERROR: expected


def test_batches_prepared_ahead_still_leave_out_what_is_stored(
    db_url: str, spool_dir: Path, internal_errors: object
) -> None:
    # Replay prepares (and seals) each batch while the one before it is stored; events that
    # turn out to be stored already, or twice in the segment, must drop out of both.
    ids = uuid7_batch([time.time_ns()] * 9)
    spool_segment(spool_dir, [(i, f"U{n}") for n, i in enumerate(ids[:4])], url=db_url)
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        assert audit.flush(30)
    again = [(i, f"U{n}") for n, i in enumerate(ids)] + [(ids[5], "U5"), (ids[7], "U7")]
    spool_segment(spool_dir, again, url=db_url)
    with AuditLogger(db_url, spool_dir=spool_dir, batch_size=3) as audit:
        assert audit.flush(30)
        assert audit.stats().replayed == 11  # read from the spool; 5 of them new
    assert sorted(e.id for e in stored(db_url)) == sorted(ids)
    report = verify_log(db_url)
    assert report.ok, report.problems


def test_an_event_twice_in_one_replay_batch_is_stored_once(db_url: str, spool_dir: Path) -> None:
    # Replay stores a batch without checking its ids first; the same id twice in one batch
    # (a batch spooled twice) makes that attempt fail, and the checked retry stores it once.
    ids = uuid7_batch([time.time_ns()] * 3)
    spool_segment(
        spool_dir, [(ids[0], "U0"), (ids[1], "U1"), (ids[0], "U0"), (ids[2], "U2")], url=db_url
    )
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        assert audit.flush(30)
        stats = audit.stats()
    assert sorted(e.id for e in stored(db_url)) == sorted(ids)
    assert stats.quarantined == 0
    assert list(spool_dir.glob("*.seg")) == []
    report = verify_log(db_url)
    assert report.ok, report.problems


def test_a_segment_replayed_by_another_logger_stops_holding_batches_back(
    sqlite_url: str, spool_dir: Path
) -> None:
    blocker = sqlite3.connect(make_url(sqlite_url).database or "", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    a = AuditLogger(sqlite_url, spool_dir=spool_dir, write_timeout=0.3)
    a.audit_login("during-outage", None)
    assert a.flush(1) is False
    blocker.execute("ROLLBACK")
    blocker.close()
    with AuditLogger(sqlite_url, spool_dir=spool_dir) as b:
        assert b.flush(30)  # replays a's sealed segment
    assert a.flush(30)
    # a's retries backed off during the outage: one event through, and it is healthy again.
    a.audit_login("recovered", None)
    assert a.flush(30)
    assert a.stats().healthy
    before = a.stats().spooled
    for i in range(500):
        a.audit_login(f"after-{i}", None)
    assert a.flush(30)
    assert a.stats().spooled == before  # straight to the database, not through the spool
    a.close()
    assert len(stored(sqlite_url)) == 502


class Team(Enum):
    ACME = "T0ACME"


def test_an_event_stored_through_the_spool_is_stored_as_it_would_be_directly(
    db_url: str, spool_dir: Path
) -> None:
    # A logger used after close() spools every call (on the caller's thread); a new logger
    # replays the spool. Values JSON cannot carry, and workspace refs holding other types,
    # must come out as the same rows, notes included, as without the spool.
    odd: list[tuple[str, object]] = [
        ("U\ud800", WorkspaceRef("T\ud800")),
        ("U1", WorkspaceRef(Team.ACME)),  # type: ignore[arg-type]
        ("U2", WorkspaceRef(("T9",), name=object())),  # type: ignore[arg-type]
        ("U3", WorkspaceRef("T5", is_active="yes")),  # type: ignore[arg-type]
    ]

    def log_all(audit: AuditLogger, path: str) -> None:
        for n, (user, ws) in enumerate(odd):
            audit.log_audit_event(
                "login", user_id=user, workspace_id=ws, resource=path, resource_id=str(n)
            )

    with AuditLogger(db_url, spool_dir=spool_dir / "direct") as direct:
        log_all(direct, "direct")
        assert direct.flush(30)
    closed = AuditLogger(db_url, spool_dir=spool_dir / "spool")
    closed.close()
    log_all(closed, "spool")
    with AuditLogger(db_url, spool_dir=spool_dir / "spool") as replayer:
        assert replayer.flush(30)
        assert replayer.stats().replayed == len(odd)
    rows = {(e.resource, e.resource_id): e for e in stored(db_url)}
    for n in range(len(odd)):
        a, b = rows["direct", str(n)], rows["spool", str(n)]
        assert (a.user_id, a.workspace_id) == (b.user_id, b.workspace_id)
        assert sorted(map(repr, a.sanitised or [])) == sorted(map(repr, b.sanitised or []))
