#!/usr/bin/env python3
"""The viewer at 1,000,000 events on PostgreSQL: page and /api/events, first and 100th page.

    .venv/bin/python bench/viewer.py            # 1M rows (~2 minutes to build them)
    .venv/bin/python bench/viewer.py --rows 100000

The log: one workspace holds 90% of the rows, another 100, ten others share the rest. The
viewer is served by uvicorn on 127.0.0.1 in this process and asked over HTTP, each request as a
browser or a SIEM would send it; every request also records its audit_log.viewed event, as in
production. The chain badge is off (``chain_badge=False``): its verify runs in a child process
and is not on the request path, but on this 2-core machine it would take a core from the
measurement. Goal: p50 <= 50 ms for each row of the table. It reports; it exits 0 either way.

PostgreSQL comes from AUDITLEDGER_BENCH_POSTGRES_URL (default: the local server as postgres).
The run creates a uniquely named database and drops it at the end, even on error.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from auditledger import AuditLogger  # noqa: E402
from auditledger._db.migrate import upgrade  # noqa: E402
from auditledger.web import ViewerAccess, audit_viewer  # noqa: E402

ENV_URL = "AUDITLEDGER_BENCH_POSTGRES_URL"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
GOAL_MS = 50.0
BIG, SMALL = uuid.UUID(int=0xB16), uuid.UUID(int=0x5A11)

_FILL = """
INSERT INTO audit_logs (id, user_id, workspace_id, ip_address, user_agent, action, resource,
    resource_id, details, previous_value, new_value, created_at, chain_id, chain_seq,
    chain_hash, canonical)
SELECT gen_random_uuid(), 'U' || (g %% 500), %(ws)s, '10.0.' || (g %% 250) || '.' || (g %% 200),
    'Mozilla/5.0 bench', CASE WHEN g %% 10 = 0 THEN 'settings_changed' ELSE 'login' END,
    CASE WHEN g %% 10 = 0 THEN 'settings' ELSE 'user' END, 'U' || (g %% 500),
    jsonb_build_object('n', g, 'note', 'benchmark row'),
    CASE WHEN g %% 10 = 0 THEN jsonb_build_object('sso_required', false) END,
    CASE WHEN g %% 10 = 0 THEN jsonb_build_object('sso_required', true) END,
    %(start)s::timestamptz + g * %(step)s::interval, %(ws)s, g, '\\x00', '\\x00'
FROM generate_series(1, %(n)s) AS g
"""


def conninfo(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


@contextmanager
def bench_database(server: str) -> Iterator[str]:
    name = f"auditledger_bench_viewer_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(conninfo(server), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield conninfo(server, name)
    finally:
        with psycopg.connect(conninfo(server), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fill(url: str, rows: int) -> None:
    """Rows straight into the table (valid chains are not needed to read them)."""
    big = rows * 9 // 10
    others = [uuid.UUID(int=0x07E0 + i) for i in range(10)]
    each = (rows - big - 100) // len(others)
    plan = [(BIG, big), (SMALL, 100)] + [(ws, each) for ws in others]
    with psycopg.connect(url, autocommit=True) as conn:
        for i, (ws, _) in enumerate(plan):
            conn.execute(
                "INSERT INTO workspaces (id, team_id, name) VALUES (%s, %s, %s)",
                (ws, f"T0BENCH{i:02d}", f"bench {i}"),
            )
        for ws, n in plan:
            # Each workspace's events spread over the same 30 days, interleaved in time.
            conn.execute(
                _FILL, {"ws": ws, "n": n, "start": "2026-11-01", "step": f"{2_592_000 / n} seconds"}
            )
        conn.execute("VACUUM ANALYZE audit_logs")


@contextmanager
def served(app: Any) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:  # start-up barrier
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def p50_ms(http: httpx.Client, url: str, params: dict[str, str], n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter_ns()
        answer = http.get(url, params=params)
        times.append((time.perf_counter_ns() - start) / 1e6)
        assert answer.status_code == 200, answer.text[:200]
    return statistics.median(times)


def cursor_of_page(http: httpx.Client, base: str, workspace: str, page: int) -> str:
    cursor = ""
    for _ in range(page - 1):
        params = {"workspace": workspace, "limit": "50"}
        if cursor:
            params["cursor"] = cursor
        cursor = http.get(f"{base}/api/events", params=params).json()["next_cursor"]
    return cursor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=40, help="requests per figure")
    args = parser.parse_args()
    server = os.environ.get(ENV_URL, DEFAULT_SERVER)
    with bench_database(server) as url, tempfile.TemporaryDirectory() as tmp:
        upgrade(url)
        started = time.monotonic()
        fill(url, args.rows)
        print(f"{args.rows:,} rows written in {time.monotonic() - started:.0f} s")
        recorder = AuditLogger(url, spool_dir=Path(tmp) / "spool")

        def authorize(request: Any) -> ViewerAccess:
            return ViewerAccess(actor="bench", workspaces=[BIG, SMALL])

        viewer = audit_viewer(url, authorize=authorize, logger=recorder, chain_badge=False)
        try:
            with served(viewer) as base, httpx.Client(timeout=30) as http:
                print(f"\nGoal: p50 <= {GOAL_MS:.0f} ms ({args.repeat} requests each, over HTTP)")
                print(f"{'':50} {'p50':>9} {'goal/p50':>9}")
                for name, ws in (("big workspace (90%)", BIG), ("small workspace (100)", SMALL)):
                    page = 100 if ws == BIG else 2  # the small one has 2 pages of 50
                    cursor = cursor_of_page(http, base, str(ws), page)
                    for route, path in (("page", "/"), ("/api/events", "/api/events")):
                        for label, extra in (
                            ("first page", {}),
                            (f"page {page}", {"cursor": cursor}),
                        ):
                            params = {"workspace": str(ws), "limit": "50", **extra}
                            ms = p50_ms(http, f"{base}{path}", params, args.repeat)
                            verdict = "ok" if ms <= GOAL_MS else "MISSED"
                            print(
                                f"{name + ', ' + route + ', ' + label:50} {ms:7.1f} ms"
                                f" {GOAL_MS / ms:8.1f}x {verdict}"
                            )
        finally:
            viewer.close()
            recorder.close()


if __name__ == "__main__":
    main()
