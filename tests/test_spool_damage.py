"""A damaged spool segment costs the damaged records only; a torn tail costs nothing.

A segment of 1,000 events is damaged in the ways disks and people damage files; replay must
store every event it can still read, keep the damaged bytes in ``*.corrupt``, count the loss
by reason in ``stats().dropped``, and make ``flush()`` say False once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from auditledger import AuditLogger
from auditledger._ids import uuid7_batch
from auditledger._write.spool_frames import FRAME_SIZE, MAGIC, parse
from tests.helpers import spool_segment, stored

N = 400


def _segment(spool_dir: Path, url: str) -> tuple[Path, list[str]]:
    ids = uuid7_batch([time.time_ns()] * N)
    path = spool_segment(spool_dir, [(i, f"U{n}") for n, i in enumerate(ids)], url=url)
    return path, [str(i) for i in ids]


def _record_starts(data: bytes) -> list[int]:
    return [offset for offset, _, _ in parse(data).records]


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x5A]) + data[at + 1 :]


def _replay(url: str, spool_dir: Path) -> tuple[bool, dict[str, int], set[str], bool]:
    with AuditLogger(url, spool_dir=spool_dir) as audit:
        first = audit.flush(60)
        dropped = audit.stats().dropped
        again = audit.flush(60)  # the loss is answered once, then the spool is clear
    return first, dropped, {str(e.id) for e in stored(url)}, again


# Where one flipped byte lands, relative to the record at 10% of the segment.
_IN_RECORD = {
    "sync marker": 0,
    "kind": 4,
    "length": 6,
    "payload checksum": 10,
    "header checksum": 14,
    "payload": FRAME_SIZE + 20,
}


@pytest.mark.parametrize("where", list(_IN_RECORD))
def test_one_flipped_byte_costs_one_event(
    where: str,
    db_url: str,
    spool_dir: Path,
    caplog: pytest.LogCaptureFixture,
    internal_errors: object,
) -> None:
    path, ids = _segment(spool_dir, db_url)
    data = path.read_bytes()
    hit = _record_starts(data)[N // 10]
    path.write_bytes(_flip(data, hit + _IN_RECORD[where]))
    first, dropped, kept, again = _replay(db_url, spool_dir)
    assert kept == set(ids) - {ids[N // 10]}  # every event before and after the damage
    assert dropped == {"corrupt_record": 1}
    assert (first, again) == (False, True)
    (corrupt,) = spool_dir.glob("*.corrupt")
    assert data[hit + FRAME_SIZE + 30 : hit + FRAME_SIZE + 70] in corrupt.read_bytes()
    assert list(spool_dir.glob("*.seg")) == []
    assert any("damaged" in r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    internal_errors.records.clear()  # type: ignore[attr-defined]


@pytest.mark.parametrize("where", ["magic", "header record", "header length"])
def test_a_damaged_header_loses_nothing_behind_it(
    where: str, db_url: str, spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, ids = _segment(spool_dir, db_url)
    data = path.read_bytes()
    at = {"magic": 3, "header record": len(MAGIC) + FRAME_SIZE + 3, "header length": 26}[where]
    path.write_bytes(_flip(data, at))
    first, dropped, kept, again = _replay(db_url, spool_dir)
    assert kept == set(ids)
    assert dropped == {}
    assert first
    assert again
    (corrupt,) = spool_dir.glob("*.corrupt")  # ...but the damage is kept and reported
    assert b"corrupt_header" in corrupt.read_bytes()
    assert any("damaged" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda d, at: d[:at] + b"garbage\x00\xff" * 7 + d[at:], id="bytes inserted"),
        pytest.param(lambda d, at: d[: at + 30] + d[at + 90 :], id="bytes removed"),
        pytest.param(lambda d, at: d[:at] + b"\x00" * 4096 + d[at + 4096 :], id="zeroed page"),
    ],
)
def test_inserted_removed_or_zeroed_bytes_cost_only_the_records_they_hit(
    damage: Callable[[bytes, int], bytes],
    db_url: str,
    spool_dir: Path,
    internal_errors: object,
) -> None:
    path, ids = _segment(spool_dir, db_url)
    data = path.read_bytes()
    starts = _record_starts(data)
    at = starts[N // 2] + 5
    damaged = damage(data, at)
    path.write_bytes(damaged)
    first, dropped, kept, _ = _replay(db_url, spool_dir)
    # Exactly the records the damage touched are gone, and each of them is counted.
    hit = {n for n, s in enumerate(starts) if s <= at + 4096 and s + FRAME_SIZE + 1 > at - 200}
    lost = set(ids) - kept
    assert lost
    assert lost <= {ids[n] for n in hit}
    assert sum(dropped.values()) == len(lost)
    assert first is False
    internal_errors.records.clear()  # type: ignore[attr-defined]


def test_a_flipped_byte_in_the_last_record_of_a_sealed_segment_is_counted(
    sqlite_url: str, spool_dir: Path, internal_errors: object
) -> None:
    path, ids = _segment(spool_dir, sqlite_url)
    data = path.read_bytes()
    path.write_bytes(_flip(data, len(data) - 3))
    first, dropped, kept, _ = _replay(sqlite_url, spool_dir)
    assert kept == set(ids[:-1])
    assert dropped == {"corrupt_record": 1}
    assert first is False
    internal_errors.records.clear()  # type: ignore[attr-defined]


@pytest.mark.parametrize("cut", [1, 5, FRAME_SIZE, FRAME_SIZE + 3])
def test_a_torn_tail_is_normal_and_silent(
    cut: int, db_url: str, spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, ids = _segment(spool_dir, db_url)
    data = path.read_bytes()
    last = _record_starts(data)[-1]
    path.write_bytes(data[: last + cut])  # a crash in the middle of the last append
    first, dropped, kept, _ = _replay(db_url, spool_dir)
    assert kept == set(ids[:-1])
    assert (first, dropped) == (True, {})
    assert list(spool_dir.glob("*.corrupt")) == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_any_single_flipped_byte_is_either_read_around_or_counted(tmp_path: Path) -> None:
    # Reading alone, every position of a small segment: what is not read back is counted.
    path, _ = _segment(tmp_path / "spool", "sqlite:///" + str(tmp_path / "x.db"))
    data = path.read_bytes()[: 20 * 1024]  # ends in a torn record
    parsed = parse(data)
    good = len(parsed.records)
    whole = parsed.records[-1][0] + FRAME_SIZE + len(parsed.records[-1][2])
    for at in range(0, whole):
        damaged = parse(_flip(data, at))
        lost = sum(d.records for d in damaged.damage)
        assert len(damaged.records) + lost == good, at
        assert len(damaged.records) >= good - 1, at
        assert damaged.damage, at
        assert all(d.data for d in damaged.damage), at
