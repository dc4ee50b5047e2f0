"""Time windows of a workspace page in (created_at, chain position) order, exactly, on both
databases: every event once, in order, whatever the page size, while writers append, and
whether commits came in time order or not."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import insert

from auditledger import AuditEvent, AuditLogger, AuditReader, InvalidCursor
from auditledger._db.engine import make_engine
from auditledger._db.schema import audit_logs
from tests.test_api import make_workspace

BASE = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
Key = tuple[datetime, int]


def _insert(url: str, rows: list[dict[str, Any]]) -> None:
    """Rows stored as they are (the reader checks no hash): the tests choose each event's
    time and chain position, ties and late commits included."""
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(insert(audit_logs), rows)
    engine.dispose()


def _row(ws: uuid.UUID, seq: int, at: datetime, user: str, action: str) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(), "workspace_id": ws, "chain_id": ws, "chain_seq": seq,
        "created_at": at, "user_id": user, "action": action, "chain_hash": b"h",
        "canonical": b"c", "details": {"seq": seq},
    }  # fmt: skip


def _seed(url: str) -> tuple[uuid.UUID, uuid.UUID]:
    """90 events of one workspace, three to a second, stored out of time order now and then
    (a late commit: an old time at a later chain position), and 30 of another workspace at
    the same times."""
    ws, other = make_workspace(url, "T0WIN"), make_workspace(url, "T0OTHER")
    order = list(range(90))
    for i in range(0, 90, 11):  # every 11th event commits 20 positions late
        order.insert(min(i + 20, 89), order.pop(i))
    rows = [
        _row(ws, seq, BASE + timedelta(seconds=n // 3), f"U{n % 3}", ("login", "logout")[n % 2])
        for seq, n in enumerate(order, start=1)
    ]
    rows += [_row(other, s, BASE + timedelta(seconds=s), "U0", "login") for s in range(1, 31)]
    _insert(url, rows)
    return ws, other


def _key(event: AuditEvent) -> Key:
    assert event.seq is not None
    return event.created_at, event.seq


def _pages(reader: AuditReader, limit: int, **filters: Any) -> list[AuditEvent]:
    out: list[AuditEvent] = []
    cursor: str | None = None
    for _ in range(1000):
        page = reader.events(limit=limit, cursor=cursor, **filters)
        out.extend(page.items)
        if page.next_cursor is None or not page.items:
            return out
        cursor = page.next_cursor
    raise AssertionError("paging did not end")


WINDOWS: list[dict[str, Any]] = [
    {"since": BASE + timedelta(seconds=5)},
    {"until": BASE + timedelta(seconds=25)},
    {"since": BASE + timedelta(seconds=4), "until": BASE + timedelta(seconds=21)},
    {"since": BASE + timedelta(seconds=4), "until": BASE + timedelta(seconds=21), "user_id": "U1"},
    {"since": BASE + timedelta(seconds=2), "action": "logout"},
]


@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: "+".join(sorted(w)))
def test_window_pages_are_in_time_order_exactly(db_url: str, window: dict[str, Any]) -> None:
    ws, _ = _seed(db_url)
    with AuditReader(db_url) as reader:
        every = list(reader.iter_events(workspace=ws))

        def matches(e: AuditEvent) -> bool:
            since, until = window.get("since"), window.get("until")
            return (
                (since is None or e.created_at >= since)
                and (until is None or e.created_at < until)
                and all(
                    getattr(e, k) == v for k, v in window.items() if k not in ("since", "until")
                )
            )

        expected = sorted((e for e in every if matches(e)), key=_key, reverse=True)
        assert 5 < len(expected) < 90
        for limit in (1, 4, 7, 1000):
            found = _pages(reader, limit, workspace=ws, **window)
            assert [e.id for e in found] == [e.id for e in expected], limit
        assert [e.id for e in reader.iter_events(workspace=ws, **window)] == [
            e.id for e in expected
        ]
        if "until" in window:  # a bounded window, oldest first: the same order reversed
            oldest = _pages(reader, 4, workspace=ws, oldest_first=True, **window)
            assert [e.id for e in oldest] == [e.id for e in reversed(expected)]


def test_open_ended_oldest_first_stays_in_chain_order(db_url: str) -> None:
    """``--oldest-first --since T`` is what a feed resumes: chain order, so a late commit
    (an older time at a later position) is still returned after the cursor."""
    ws, _ = _seed(db_url)
    since = BASE + timedelta(seconds=10)
    with AuditReader(db_url) as reader:
        every = list(reader.iter_events(workspace=ws))
        expected = sorted((e for e in every if e.created_at >= since), key=lambda e: e.seq or 0)
        for limit in (1, 6, 1000):
            found = _pages(reader, limit, workspace=ws, since=since, oldest_first=True)
            assert [e.id for e in found] == [e.id for e in expected]
        page = reader.events(workspace=ws, since=since, oldest_first=True, limit=1000)
        late = _row(ws, 91, since + timedelta(seconds=1), "U9", "late")
        _insert(db_url, [late])
        resumed = reader.events(
            workspace=ws, since=since, oldest_first=True, cursor=page.next_cursor
        )
        assert [e.id for e in resumed.items] == [late["id"]]


def test_window_paging_while_writers_append(db_url: str, spool_dir: Path) -> None:
    """Newest first through a window open at the top: events stored between pages (new ones,
    and late commits with times inside the window) never make a page repeat an event or skip
    one that existed when the first page was read."""
    ws, _ = _seed(db_url)
    since = BASE + timedelta(seconds=3)
    with AuditReader(db_url) as reader, AuditLogger(db_url, spool_dir=spool_dir) as audit:
        existing = {e.id for e in reader.iter_events(workspace=ws, since=since)}
        seen: list[uuid.UUID] = []
        page = reader.events(workspace=ws, since=since, limit=6)
        for _ in range(100):
            seen.extend(e.id for e in page.items)
            if page.next_cursor is None:
                break
            head = reader.events(workspace=ws, limit=1).items[0].seq or 0
            oldest_shown = page.items[-1].created_at
            late = [
                _row(ws, head + n, moment, "U8", "late")
                for n, moment in enumerate((oldest_shown, oldest_shown + timedelta(seconds=1)), 1)
            ]
            _insert(db_url, late)
            for _ in range(2):
                audit.log_audit_event("login", user_id="U7", workspace_id=ws)
            assert audit.flush(10)
            page = reader.events(workspace=ws, since=since, limit=6, cursor=page.next_cursor)
        else:
            raise AssertionError("paging did not end")
    assert len(seen) == len(set(seen))
    assert existing <= set(seen)


def test_window_cursors_are_bound_and_versioned(db_url: str) -> None:
    ws, other = _seed(db_url)
    window: dict[str, Any] = {
        "since": BASE + timedelta(seconds=4),
        "until": BASE + timedelta(seconds=21),
    }
    with AuditReader(db_url) as reader:
        page = reader.events(workspace=ws, limit=5, **window)
        assert page.next_cursor is not None
        for changed in (
            {**window, "until": BASE + timedelta(seconds=22)},
            {"since": window["since"]},
            {**window, "user_id": "U1"},
            {**window, "oldest_first": True},
        ):
            with pytest.raises(InvalidCursor):
                reader.events(workspace=ws, limit=5, cursor=page.next_cursor, **changed)
        with pytest.raises(InvalidCursor):
            reader.events(workspace=other, limit=5, cursor=page.next_cursor, **window)
        # A cursor of the previous format (a chain position only) cannot say where a window's
        # page ended: refused, even though this database's key signed it.
        filters = reader.filters(workspace=ws, **window)
        key = reader._cursor_key()
        for version, position in ((1, ["s", 80]), (2, ["s", 80]), (2, ["t", 1, uuid.uuid4().hex])):
            payload = orjson.dumps(
                {"v": version, "f": filters.fingerprint(), "p": position, "t": [None, None]}
            )
            tag = hmac.new(key, payload, hashlib.sha256).digest()[:16]
            old = f"{_b64(payload)}.{_b64(tag)}"
            with pytest.raises(InvalidCursor):
                reader.events(workspace=ws, limit=5, cursor=old, **window)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_open_ended_oldest_first_from_near_the_end(db_url: str) -> None:
    """A ``since`` near the chain's end is looked up in the index of times, not by walking the
    chain from its start; exactly, even when the first event in time order from ``since`` on
    is a late commit that follows later events in the chain."""
    ws = make_workspace(db_url, "T0TAIL")
    late_seq = 48
    rows = [
        _row(ws, seq, BASE + timedelta(seconds=seq), "U1", "login")
        for seq in range(1, 51)
        if seq != late_seq
    ]
    since = BASE + timedelta(seconds=39.5)
    rows.append(_row(ws, late_seq, since, "U1", "late"))
    _insert(db_url, rows)
    with AuditReader(db_url) as reader:
        for limit in (1, 3, 50):
            found = _pages(reader, limit, workspace=ws, since=since, oldest_first=True)
            assert [e.seq for e in found] == list(range(40, 51)), limit
        streamed = reader.iter_events(workspace=ws, since=since, oldest_first=True)
        assert [e.seq for e in streamed] == list(range(40, 51))
        later = BASE + timedelta(seconds=60)
        empty = reader.events(workspace=ws, since=later, oldest_first=True)
        assert empty.items == []
        assert empty.next_cursor is not None
        _insert(db_url, [_row(ws, 51, later, "U2", "login")])
        resumed = reader.events(
            workspace=ws, since=later, oldest_first=True, cursor=empty.next_cursor
        )
        assert [e.seq for e in resumed.items] == [51]
