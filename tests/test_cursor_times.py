"""A cursor is bound to the exact times it was made with: an absolute time, a span back from
now (``--since 2h``, ``since=timedelta(hours=2)``), or none. A span resolves once; its later
pages keep the first page's moment; any other time is refused (exit 2 on the command line)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from auditledger import AuditLogger, AuditReader, InvalidCursor, WorkspaceRef
from tests.helpers import cli


def _log(url: str, spool_dir: Path, count: int = 6) -> None:
    with AuditLogger(url, spool_dir=spool_dir) as audit:
        for i in range(count):
            audit.log_audit_event("login", user_id=f"U{i}", workspace_id=WorkspaceRef("T0TIME"))
        assert audit.flush(10)


def test_a_span_is_bound_to_the_cursor(db_url: str, spool_dir: Path) -> None:
    _log(db_url, spool_dir)
    now = [datetime.now(UTC)]
    absolute = now[0] - timedelta(hours=2)
    with AuditReader(db_url, clock=lambda: now[0]) as reader:

        def page(cursor: str | None = None, **times: Any) -> Any:
            return reader.events(workspace="T0TIME", limit=2, cursor=cursor, **times)

        made: dict[str, str | None] = {
            "absolute": page(since=absolute).next_cursor,
            "2h": page(since=timedelta(hours=2)).next_cursor,
            "none": page().next_cursor,
            "until now": page(until=timedelta(0)).next_cursor,
        }
        assert None not in made.values()
        refused: list[tuple[str, dict[str, Any]]] = [
            ("absolute", {"since": timedelta(hours=2)}),  # the hostile QA's case
            ("2h", {"since": absolute}),  # the very moment 2h resolved to, given absolutely
            ("2h", {"since": timedelta(hours=3)}),
            ("2h", {}),
            ("none", {"since": timedelta(hours=2)}),
            ("2h", {"since": timedelta(hours=2), "until": timedelta(0)}),
            ("until now", {"until": now[0]}),
        ]
        for name, times in refused:
            with pytest.raises(InvalidCursor, match="other filters"):
                page(made[name], **times)
        # The same span, asked again later, pages on from the first page's moment: events
        # that fell out of "the last 2 hours" since then are still on the next pages.
        now[0] += timedelta(hours=3)
        assert page(since=timedelta(hours=2)).items == []
        rest = page(made["2h"], since=timedelta(hours=2))
        assert len(rest.items) == 2
        assert page(made["2h"], since=timedelta(minutes=120)).items == rest.items
        assert page(made["absolute"], since=absolute).items == rest.items


def test_negative_and_absurd_spans_are_refused(sqlite_url: str) -> None:
    with AuditReader(sqlite_url) as reader:
        with pytest.raises(ValueError, match="since: a span back from now cannot be negative"):
            reader.events(since=timedelta(hours=-1))
        with pytest.raises(ValueError, match=r"until: .* before year 1"):
            reader.events(until=timedelta(days=10**6))


def test_the_cli_refuses_a_cursor_with_another_since(db_url: str, spool_dir: Path) -> None:
    _log(db_url, spool_dir)
    args = ["events", "--database-url", db_url, "--workspace", "T0TIME", "--json", "--limit", "2"]
    day_ago = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def cursor_of(*extra: str) -> str:
        done = cli(*args, *extra)
        assert done.returncode == 0, done.stderr
        return done.stderr.split("--cursor ")[1].split()[0]

    absolute, relative = cursor_of("--since", day_ago), cursor_of("--since", "2h")
    for cursor, since in (
        (absolute, ["--since", "2h"]),  # the hostile QA's case: accepted before
        (relative, ["--since", "3h"]),
        (relative, ["--since", day_ago]),
        (relative, []),
        (cursor_of(), ["--since", "2h"]),
    ):
        done = cli(*args, *since, "--cursor", cursor)
        assert done.returncode == 2, (since, done.stdout)
        assert done.stdout == ""
        assert done.stderr.startswith("error: the cursor belongs to other filters")
        assert len(done.stderr.strip().splitlines()) == 1
    for cursor, since in ((relative, ["--since", "2h"]), (absolute, ["--since", day_ago])):
        done = cli(*args, *since, "--cursor", cursor)
        assert done.returncode == 0, done.stderr
        assert len(done.stdout.splitlines()) == 2
