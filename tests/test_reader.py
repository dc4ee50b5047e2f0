"""AuditReader: every filter, keyset pages and their cursors, on both databases."""

from __future__ import annotations

import ipaddress
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from auditledger import AuditEvent, AuditLogger, AuditReader, InvalidCursor
from tests.helpers import via
from tests.tcp_proxy import TcpProxy
from tests.test_api import make_workspace


def _fill(url: str, spool_dir: Path) -> tuple[uuid.UUID, uuid.UUID]:
    big, small = make_workspace(url, "T0BIG"), make_workspace(url, "T0SMALL")
    with AuditLogger(url, spool_dir=spool_dir) as audit:
        for i in range(60):
            audit.log_audit_event(
                "settings_changed" if i % 3 == 0 else "login",
                user_id=f"U{i % 4}",
                workspace_id=big,
                ip_address=f"10.0.{i % 2}.{i}" if i % 5 else f"2001:db8::{i:x}",
                resource="settings" if i % 3 == 0 else "user",
                resource_id="sso_required" if i % 6 == 0 else f"r{i}",
                details={"note": f"Event number {i}"},
                new_value={"enabled": i % 2 == 0},
            )
        for _ in range(5):
            audit.log_audit_event("login", user_id="U9", workspace_id=small)
        audit.log_audit_event("admin_action", user_id="U0")  # no workspace
        assert audit.flush(10)
    return big, small


def _all_pages(reader: AuditReader, limit: int, **filters: object) -> list[AuditEvent]:
    out: list[AuditEvent] = []
    cursor: str | None = None
    while True:
        page = reader.events(limit=limit, cursor=cursor, **filters)  # type: ignore[arg-type]
        out.extend(page.items)
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


def test_pages_and_filters(db_url: str, spool_dir: Path) -> None:
    big, small = _fill(db_url, spool_dir)
    with AuditReader(db_url) as reader:
        pages = _all_pages(reader, 7, workspace=big)
        assert [e.seq for e in pages] == list(range(60, 0, -1))
        assert all(e.workspace_id == big for e in pages)
        everything = _all_pages(reader, 9)
        assert len(everything) == 66 == len({e.id for e in everything})
        keys = [(e.created_at, e.id) for e in everything]
        assert keys == sorted(keys, reverse=True)
        assert len(list(reader.iter_events())) == 66
        assert [e.seq for e in reader.iter_events(workspace=small, oldest_first=True)] == [
            1, 2, 3, 4, 5,
        ]  # fmt: skip

        def count(**filters: object) -> int:
            return len(list(reader.iter_events(**filters)))

        assert count(workspace="T0SMALL") == 5
        assert count(workspace=small.hex[:10]) == 5
        assert count(workspace=big, user_id="U1") == 15
        assert count(user_id="U0") == 16  # 15 in the big workspace, 1 without one
        assert count(workspace=big, action="settings_changed") == 20
        assert count(action_prefix="settings_") == 20
        assert count(action_prefix="%") == 0  # a LIKE wildcard is matched literally
        assert count(workspace=big, resource="settings", resource_id="sso_required") == 10
        assert count(ip="10.0.1.0/24") == 24
        assert count(ip="10.0.0.0/8") == 48
        assert count(ip=ipaddress.ip_network("2001:db8::/32")) == 12
        assert count(ip="10.0.1.1") == 1
        assert count(text="EVENT NUMBER 1") == 11  # 1, 10-19
        assert count(text="sso_req") == 10
        assert count(text='"enabled": true') + count(text='"enabled":true') == 30
        middle = pages[30].created_at
        newer = count(workspace=big, since=middle)
        older = count(workspace=big, until=middle)
        assert newer + older == 60
        assert newer >= 30
        naive = middle.replace(tzinfo=None)
        assert count(workspace=big, since=naive) == newer
        assert count(workspace=big, since=middle, until=middle + timedelta(microseconds=1)) >= 1


def test_cursors_are_bound_to_their_query(db_url: str, spool_dir: Path) -> None:
    big, small = _fill(db_url, spool_dir)
    with AuditReader(db_url) as reader:
        page = reader.events(workspace=big, user_id="U1", limit=5)
        assert page.next_cursor is not None
        second = reader.events(workspace=big, user_id="U1", limit=5, cursor=page.next_cursor)
        assert {e.id for e in second.items}.isdisjoint(e.id for e in page.items)
        for other in (
            {"workspace": small, "user_id": "U1"},
            {"workspace": big, "user_id": "U2"},
            {"workspace": big},
            {"workspace": big, "user_id": "U1", "oldest_first": True},
        ):
            with pytest.raises(InvalidCursor, match="other filters"):
                reader.events(cursor=page.next_cursor, **other)
        head, _, tag = page.next_cursor.partition(".")
        edited = head[:-2] + ("A" if head[-2] != "A" else "B") + head[-1] + "." + tag
        for bad in (edited, "garbage", "a.b", "", page.next_cursor + "x"):
            with pytest.raises(ValueError, match="cursor"):
                reader.events(workspace=big, user_id="U1", cursor=bad)
    with (
        AuditReader(db_url, cursor_key="another secret") as stranger,
        pytest.raises(InvalidCursor, match="not issued"),
    ):
        stranger.events(workspace=big, user_id="U1", limit=5, cursor=page.next_cursor)
    with AuditReader(db_url) as again:  # another process with the database's key accepts it
        assert again.events(workspace=big, user_id="U1", limit=5, cursor=page.next_cursor) == (
            second
        )


def test_limit_and_bad_filters(sqlite_url: str) -> None:
    with AuditReader(sqlite_url) as reader:
        for limit in (0, 1001, -1):
            with pytest.raises(ValueError, match="limit"):
                reader.events(limit=limit)
        with pytest.raises(ValueError, match="not an IP address"):
            reader.events(ip="10.0.0.0/33")
        with pytest.raises(LookupError, match="team id"):
            reader.events(workspace="T0NOPE")
        with pytest.raises(TypeError, match="limit"):
            list(reader.iter_events(limit=5))


def test_paging_while_writers_append(db_url: str, spool_dir: Path) -> None:
    big, _ = _fill(db_url, spool_dir)
    with AuditReader(db_url) as reader, AuditLogger(db_url, spool_dir=spool_dir) as audit:
        existing = {e.id for e in reader.iter_events(workspace=big)}
        seen: list[uuid.UUID] = []
        page = reader.events(workspace=big, limit=8)
        for index in range(100):
            seen.extend(e.id for e in page.items)
            if page.next_cursor is None:
                break
            for _ in range(3):
                audit.log_audit_event("login", user_id="U7", workspace_id=big)
            assert audit.flush(10)
            page = reader.events(workspace=big, limit=8, cursor=page.next_cursor)
            assert index < 99
        assert len(seen) == len(set(seen))
        assert existing <= set(seen)


def test_oldest_first_cursor_resumes_later(db_url: str, spool_dir: Path) -> None:
    big, _ = _fill(db_url, spool_dir)
    with AuditReader(db_url) as reader:
        page = reader.events(workspace=big, oldest_first=True, limit=1000)
        assert len(page.items) == 60
        assert page.next_cursor is not None
        empty = reader.events(workspace=big, oldest_first=True, cursor=page.next_cursor)
        assert empty.items == []
        assert empty.next_cursor == page.next_cursor
        with AuditLogger(db_url, spool_dir=spool_dir) as audit:
            audit.log_audit_event("logout", user_id="U3", workspace_id=big)
            assert audit.flush(10)
        later = reader.events(workspace=big, oldest_first=True, cursor=empty.next_cursor)
        assert [(e.action, e.seq) for e in later.items] == [("logout", 61)]


def test_an_actor_records_what_it_viewed(db_url: str, spool_dir: Path) -> None:
    big, _ = _fill(db_url, spool_dir)
    with (
        AuditLogger(db_url, spool_dir=spool_dir) as recorder,
        AuditReader(db_url, actor="alice@example.com", recorder=recorder) as reader,
    ):
        reader.events(workspace=big, action="login", limit=3)
    with AuditReader(db_url) as plain:
        viewed = plain.events(workspace=big, action="audit_log.viewed").items
    assert len(viewed) == 1
    assert viewed[0].user_id == "alice@example.com"
    assert viewed[0].details == {
        "filters": {"action": "login"}, "events": 3, "continued": False,
    }  # fmt: skip


def test_a_page_after_the_server_dropped_the_connections(
    pg_url: str, proxy: TcpProxy, spool_dir: Path
) -> None:
    """The reader skips the pool's pre-ping (a round trip per page): a connection that died
    is discarded when used, and the page is read again on a fresh one."""
    big, _ = _fill(pg_url, spool_dir)
    with AuditReader(via(proxy, pg_url)) as reader:
        assert len(reader.events(workspace=big, limit=5).items) == 5
        proxy.refuse()  # every open connection is cut, as by a server restart
        proxy.restore()
        assert len(reader.events(workspace=big, limit=5).items) == 5


class _CountingLogger(AuditLogger):
    """An AuditLogger that counts the waits asked of it (the page must ask none)."""

    flushes = 0

    def flush(self, timeout: float = 10.0) -> bool:
        self.flushes += 1
        return super().flush(timeout)


def test_views_are_recorded_in_the_background_and_never_lost(db_url: str, spool_dir: Path) -> None:
    big, _ = _fill(db_url, spool_dir)
    with _CountingLogger(db_url, spool_dir=spool_dir) as recorder:
        reader = AuditReader(db_url, actor="alice@example.com", recorder=recorder)
        for action in ("login", "settings_changed", "logout"):
            reader.events(workspace=big, action=action, limit=3)
        assert recorder.flushes == 0  # no page waited for its record to be stored
        assert reader.flush()
        with AuditReader(db_url) as plain:
            viewed = plain.events(workspace=big, action="audit_log.viewed").items
        assert [v.details["filters"]["action"] for v in viewed] == [
            "logout", "settings_changed", "login",
        ]  # fmt: skip
        reader.events(workspace=big, limit=1)
        reader.close()  # a given recorder stays open, but what the reader logged is stored
        with AuditReader(db_url) as plain:
            assert len(plain.events(workspace=big, action="audit_log.viewed").items) == 4
    # The reader's own recorder (made when given an actor) is closed, so written, with it.
    with AuditReader(db_url, actor="bob@example.com") as reader:
        reader.events(workspace=big, limit=1)
    with AuditReader(db_url) as plain:
        viewed = plain.events(workspace=big, action="audit_log.viewed").items
    assert viewed[0].user_id == "bob@example.com"
