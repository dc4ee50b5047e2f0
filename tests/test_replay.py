"""Replaying a batch whose outcome was unknown stores each event exactly once."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from auditledger import AuditLogger
from auditledger._capture import capture_event
from auditledger._ids import uuid7_batch
from auditledger._spool import EVENT, SegmentWriter, encode_event
from tests.helpers import stored


def spool_segment(directory: Path, events: list[tuple[uuid.UUID, str]]) -> None:
    """Write a sealed segment the way a writer whose batch outcome was unknown leaves it."""
    writer = SegmentWriter(directory, "o")
    payloads = [
        encode_event(
            str(event_id),
            capture_event(
                time.time_ns(),
                "login",
                user,
                None,
                "192.0.2.1",
                None,
                "user",
                user,
                {"replayed": True},
                None,
                None,
            ),
        )
        for event_id, user in events
    ]
    writer.append(EVENT, payloads)
    writer.seal()


def test_replayed_events_that_already_reached_the_database_are_not_stored_twice(
    db_url: str, spool_dir: Path
) -> None:
    ids = uuid7_batch([time.time_ns()] * 15)
    first = [(ids[i], f"user-{i}") for i in range(10)]
    spool_segment(spool_dir, first)
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        assert audit.flush(30)
        assert audit.stats().replayed == 10
    # The same ten again (their commit outcome was unknown), plus five new ones.
    spool_segment(spool_dir, first + [(ids[i], f"user-{i}") for i in range(10, 15)])
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        assert audit.flush(30)
        assert audit.stats().replayed == 15
    events = stored(db_url)
    assert sorted(e.id for e in events) == sorted(ids)
    assert all(e.details == {"replayed": True} for e in events)
    assert list(spool_dir.glob("*.seg")) == []


def test_a_torn_last_record_does_not_poison_the_segment(db_url: str, spool_dir: Path) -> None:
    ids = uuid7_batch([time.time_ns()] * 3)
    spool_segment(spool_dir, [(i, "torn") for i in ids])
    (segment,) = spool_dir.glob("*.seg")
    data = segment.read_bytes()
    segment.write_bytes(data[:-7])  # a crash in the middle of appending the last record
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        assert audit.flush(30)
    assert sorted(e.id for e in stored(db_url)) == sorted(ids[:2])
