#!/usr/bin/env python3
"""Read-side benchmark (issue section "Speed"): searches and exports on a 1,000,000-event log.

    .venv/bin/python bench/read.py            # 1,000,000 events (~3-5 minutes)
    .venv/bin/python bench/read.py --quick    # 200,000 events

One workspace holds 90% of the log, another 100 events, the rest is spread over 200 more. For
each search it prints the p50 inside the server (EXPLAIN ANALYZE of the prepared statement,
forced to PostgreSQL's generic plan: the worst case once a statement has been run a few times),
the psycopg round trip (prepared, generic plan), and through AuditReader (after 10 warm-up
calls, so psycopg has prepared it; once with the server's own plan choice and once forced
generic); each figure against its goal with PASS or FAIL. Then the JSONL export rate and memory
growth against theirs, then the generic plans the figures rely on. The issue's six searches
are the goals; the rows marked "extra" are other shapes the reader serves. It reports, and
exits 0 even when a goal is missed.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg.types.json import set_json_loads
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from auditledger import AuditLogger, AuditReader  # noqa: E402
from auditledger._api.exports import export_file  # noqa: E402
from auditledger._db.migrate import upgrade  # noqa: E402
from auditledger._read import cursor as cursors  # noqa: E402
from auditledger._read.cursor import Position  # noqa: E402
from auditledger._read.export import export_events  # noqa: E402
from auditledger._read.filters import Filters  # noqa: E402
from auditledger._read.pages import _start  # noqa: E402
from auditledger._read.query import build  # noqa: E402

ENV_URL = "AUDITLEDGER_BENCH_POSTGRES_URL"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
START = datetime(2026, 11, 1, tzinfo=UTC)
DAYS = 30
ACTIONS = [f"action_{i:02d}" for i in range(19)] + ["settings_changed"]


def out(text: str = "") -> None:
    print(text, flush=True)


def ms(ns: float) -> str:
    return f"{ns / 1e6:.3f} ms"


VERDICTS: list[bool] = []


def verdict(ok: bool, counted: bool = True) -> str:
    """PASS or FAIL; ``counted``: a goal of the issue (extras are shown, not counted)."""
    if counted:
        VERDICTS.append(ok)
    return "PASS" if ok else "FAIL"


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def load(conninfo: str, total: int) -> tuple[uuid.UUID, uuid.UUID]:
    """The log, written with SQL (the writer's speed is bench/run.py's business)."""
    big, small = uuid.uuid4(), uuid.uuid4()
    others = [uuid.uuid4() for _ in range(200)]
    n_big, n_small = total * 9 // 10, 100
    n_other = total - n_big - n_small
    span = DAYS * 86_400
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.cursor().executemany(
            "INSERT INTO workspaces (id, team_id, name) VALUES (%s, %s, %s)",
            [(ws, f"T0B{i:04d}", f"ws {i}") for i, ws in enumerate([big, small, *others])],
        )
        insert = (
            "INSERT INTO audit_logs (id, user_id, workspace_id, ip_address, user_agent, action,"
            " resource, resource_id, details, created_at, chain_id, chain_seq, chain_hash,"
            " canonical)"
            " SELECT gen_random_uuid(), 'U' || (g * 7919 %% 1000), ws,"
            " '10.' || (g %% 200) || '.' || (g %% 250) || '.' || (g %% 199), 'Mozilla/5.0',"
            " (%(actions)s::text[])[(g %% 20)::int + 1],"
            " 'settings', 'r' || g, jsonb_build_object('n', g, 'note', 'bench'),"
            " %(start)s::timestamptz + make_interval(secs => %(span)s::float8 * g / %(n)s"
            "   + (g * 13 %% 7)), ws, g, sha256(int8send(g)), int8send(g)"
            " FROM (SELECT g, %(ws)s::uuid AS ws FROM generate_series(1::int8, %(n)s::int8) g) s"
        )
        for ws, n in ((big, n_big), (small, n_small)):
            conn.execute(
                insert, {"actions": ACTIONS, "start": START, "span": span, "n": n, "ws": ws}
            )
        conn.execute(
            "INSERT INTO audit_logs (id, user_id, workspace_id, action, created_at, chain_id,"
            " chain_seq, chain_hash, canonical)"
            " SELECT gen_random_uuid(), 'V' || (g %% 500), ws, 'login',"
            " %(start)s::timestamptz + make_interval(secs => %(span)s::float8 * g / %(n)s), ws,"
            " row_number() OVER (PARTITION BY ws ORDER BY g), sha256(int8send(g)), int8send(g)"
            " FROM (SELECT g, (%(others)s::uuid[])[(g %% 200)::int + 1] AS ws"
            "       FROM generate_series(1::int8, %(n)s::int8) g) s",
            {"start": START, "span": span, "n": n_other, "others": others},
        )
        conn.execute("VACUUM ANALYZE audit_logs")
    return big, small


def p50(fn: Callable[[], Any], runs: int, warmup: int = 10) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times)


def compiled(engine: Any, filters: Filters, after: Position) -> tuple[str, dict[str, Any]]:
    stmt = build(filters, after, 51).compile(dialect=engine.dialect)
    params = {k: stmt.params[k] for k in stmt.params}
    return str(stmt), params


def numbered(sql: str, params: dict[str, Any]) -> tuple[str, list[Any]]:
    """%(name)s placeholders as $1, $2 ... (for PREPARE), and the values in that order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"%\((\w+)\)s", number, sql), [params[n] for n in names]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="200,000 events instead of 1M")
    args = parser.parse_args()
    server = os.environ.get(ENV_URL, DEFAULT_SERVER)
    total = 200_000 if args.quick else 1_000_000
    name = f"auditledger_bench_read_{uuid.uuid4().hex[:8]}"
    admin = make_url(server).set(drivername="postgresql").render_as_string(hide_password=False)
    url = make_url(server).set(drivername="postgresql", database=name)
    conninfo = url.render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        run(conninfo, total)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Search:
    """One search: its filters, and how many pages deep (the cursor of page ``depth``)."""

    def __init__(self, label: str, filters: Filters, depth: int = 1, goal: bool = True) -> None:
        self.label, self.filters, self.depth, self.goal = label, filters, depth, goal
        self.cursor: str | None = None

    def position(self, reader: AuditReader) -> Position:
        """Where the timed page starts: paged to by the reader itself, cursor by cursor."""
        for _ in range(self.depth - 1):
            self.cursor = reader.page(self.filters, limit=50, cursor=self.cursor).next_cursor
        key = reader._cursor_key()
        if self.cursor is not None:
            return cursors.decode(key, self.filters.fingerprint(), self.cursor)
        with reader.engine.connect() as conn:  # an open-ended oldest-first query starts here
            return _start(conn, self.filters, Position()) or Position()


def searches(big: uuid.UUID, small: uuid.UUID) -> list[Search]:
    hour = START + timedelta(days=DAYS / 2)
    day = (hour, hour + timedelta(days=1))
    last_hour = START + timedelta(days=DAYS) - timedelta(hours=1)
    return [
        Search("newest 50, small workspace", Filters(workspace=small)),
        Search("newest 50, big workspace", Filters(workspace=big)),
        Search("newest 50, big workspace, one user", Filters(workspace=big, user_id="U17")),
        Search("newest 50, big workspace, one action",
               Filters(workspace=big, action="settings_changed")),
        Search("newest 50, big workspace, one hour",
               Filters(workspace=big, since=hour, until=hour + timedelta(hours=1))),
        Search("100th page of 50 (cursor), big workspace", Filters(workspace=big), depth=100),
        Search("extra: newest 50, big, one day", Filters(workspace=big, since=day[0],
               until=day[1]), goal=False),
        Search("extra: 100th page (cursor), big, one day",
               Filters(workspace=big, since=day[0], until=day[1]), depth=100, goal=False),
        Search("extra: newest 50, big, one user, one day",
               Filters(workspace=big, user_id="U17", since=day[0], until=day[1]), goal=False),
        Search("extra: oldest 50 from the last hour, big",
               Filters(workspace=big, since=last_hour, oldest_first=True), goal=False),
        Search("extra: oldest 50 from mid-log, big",
               Filters(workspace=big, since=hour, oldest_first=True), goal=False),
    ]  # fmt: skip


def server_time(db: psycopg.Connection[Any], sql: str, params: dict[str, Any]) -> tuple[float, str]:
    """The p50 execution time inside the server of the prepared statement's generic plan,
    and that plan."""
    prepared, values = numbered(sql, params)
    placeholders = ", ".join(["%s"] * len(values))
    with psycopg.ClientCursor(db) as cur:
        cur.execute("DEALLOCATE ALL")
        cur.execute(f"PREPARE q AS {prepared}")
        times = []
        for _ in range(30):
            cur.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE q({placeholders})", values)
            row = cur.fetchone()
            assert row is not None
            times.append(row[0][0]["Execution Time"] * 1e6)
        cur.execute(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE q("
            + placeholders + ")", values,
        )  # fmt: skip
        plan = "\n".join("    " + r[0] for r in cur.fetchall())
        cur.execute("DEALLOCATE q")
    return statistics.median(times[10:]), plan


def run(conninfo: str, total: int) -> None:
    upgrade(conninfo)
    t0 = time.perf_counter()
    big, small = load(conninfo, total)
    with psycopg.connect(conninfo) as conn:
        version = conn.info.parameter_status("server_version")
    out(f"loaded {total:,} events in {time.perf_counter() - t0:.0f} s: 90% in one workspace,")
    out(f"100 in another, the rest in 200 more; PostgreSQL {version}")
    load1, load5, _ = os.getloadavg()
    out(f"load average {load1:.1f} / {load5:.1f} on {os.cpu_count()} CPUs (the machine is shared)")
    sa_url = conninfo.replace("postgresql://", "postgresql+psycopg://", 1)
    generic = create_engine(
        sa_url, connect_args={"options": "-c plan_cache_mode=force_generic_plan"}
    )
    out()
    out("== searches: p50; goals: <= 1 ms at the database (inside the server and the round trip),")
    out("   <= 3 ms through AuditReader (the server's own plan choice, and forced generic)")
    out(
        f"{'search':44} {'server':>9} {'round trip':>10} {'reader':>9} {'generic':>9}  db    reader"
    )
    plans: list[tuple[str, float, str]] = []
    with (
        psycopg.connect(conninfo, autocommit=True) as db,
        AuditReader(conninfo) as reader,
        AuditReader(conninfo, engine=generic) as generic_reader,
    ):
        db.execute("SET plan_cache_mode = force_generic_plan")
        set_json_loads(orjson.loads, db)  # as AuditReader does
        for search in searches(big, small):
            after = search.position(reader)
            sql, params = compiled(generic, search.filters, after)

            def round_trip(s: str = sql, p: dict[str, Any] = params) -> None:
                db.execute(s, p, prepare=True).fetchall()

            def via(r: AuditReader, s: Search = search) -> None:
                r.page(s.filters, limit=50, cursor=s.cursor)

            at_db = p50(round_trip, 50)
            through = p50(lambda: via(reader), 50)
            forced = p50(lambda: via(generic_reader), 50)
            inside, plan = server_time(db, sql, params)
            plans.append((search.label, inside, plan))
            db_ok = verdict(inside <= 1e6 and at_db <= 1e6, search.goal)
            reader_ok = verdict(through <= 3e6 and forced <= 3e6, search.goal)
            out(f"{search.label:44} {ms(inside):>9} {ms(at_db):>10} {ms(through):>9}"
                f" {ms(forced):>9}  {db_ok}  {reader_ok}")  # fmt: skip
        viewed(conninfo, small)
        export_section(conninfo, reader, big)
    generic.dispose()
    out()
    out("== generic plans (plan_cache_mode = force_generic_plan) the figures above rely on")
    out("(the oldest-first rows: the page's query; the reader first finds where it starts with")
    out(" three index probes, and from mid-log a scan of the time index from since on)")
    for label, inside, plan in plans:
        out(f"-- {label}: execution p50 {ms(inside)} inside the server")
        out(plan)
    out()
    passed = sum(VERDICTS)
    out(f"== the issue's goals: {passed} PASS, {len(VERDICTS) - passed} FAIL")


def viewed(conninfo: str, small: uuid.UUID) -> None:
    """A reader with an actor: each page appends audit_log.viewed, off the page's path."""
    with tempfile.TemporaryDirectory() as tmp:
        recorder = AuditLogger(conninfo, spool_dir=Path(tmp) / "spool")
        with AuditReader(conninfo, actor="bench", recorder=recorder) as reader:
            chosen = reader.filters(workspace=small)
            took = p50(lambda: reader.page(chosen, limit=50), 50)
            stored = reader.flush(30)
        recorder.close()
    label = "extra: newest 50, small, recorded as viewed"
    out(f"{label:44} {'':>9} {'':>10} {ms(took):>9} {'':>9}        "
        f"{verdict(took <= 3e6 and stored, False)}  (records stored: {stored})")  # fmt: skip


def export_section(conninfo: str, reader: AuditReader, big: uuid.UUID) -> None:
    out()
    out("== JSONL export of the big workspace (goals: >= 100,000 events/s, RSS growth <= 64 MiB)")
    with tempfile.TemporaryDirectory() as tmp:
        recorder = AuditLogger(conninfo, spool_dir=Path(tmp) / "spool")
        exporter = AuditReader(conninfo, actor="bench", recorder=recorder)
        target = Path(tmp) / "big.jsonl"
        chosen = reader.filters(workspace=big)

        def cli_export(progress: Callable[[int], None]) -> int:
            return export_file(exporter, target, workspace=big, progress=progress).events

        def stream_export(progress: Callable[[int], None]) -> int:
            events = reader.stream(chosen, chunk=5000)
            return export_events(events, target, "jsonl", progress).events

        measure("auditledger export --format jsonl (PostgreSQL's text path)", cli_export)
        measure("extra: JSONL from AuditReader.stream (AuditEvent objects, as the viewer"
                " and SQLite export)", stream_export, goal=False)  # fmt: skip
        exporter.close()
        recorder.close()


def measure(label: str, work: Callable[[Callable[[int], None]], int], goal: bool = True) -> None:
    before, peak = rss(), [0]

    def progress(done: int) -> None:
        if done % 50_000 == 0:
            peak[0] = max(peak[0], rss())

    t0 = time.perf_counter()
    count = work(progress)
    seconds = time.perf_counter() - t0
    growth = (max(peak[0], rss()) - before) / 2**20
    rate = count / seconds
    speed, memory = verdict(rate >= 100_000, goal), verdict(growth <= 64, goal)
    out(f"{label}: {count:,} events in {seconds:.1f} s: {rate:,.0f} events/s {speed};"
        f" RSS growth {growth:.1f} MiB {memory}")  # fmt: skip


if __name__ == "__main__":
    main()
