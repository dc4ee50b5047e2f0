#!/usr/bin/env python3
"""Read-side benchmark (issue section "Speed"): searches and exports on a 1,000,000-event log.

    .venv/bin/python bench/read.py            # 1,000,000 events (~3-5 minutes)
    .venv/bin/python bench/read.py --quick    # 200,000 events

One workspace holds 90% of the log, another 100 events, the rest is spread over 200 more. For
each search it prints the p50 at the database (psycopg, the statement prepared and PostgreSQL
forced to its generic plan: the worst case once a statement has been run a few times) and
through AuditReader (after 10 warm-up calls, so psycopg has prepared it; once with the server's
default plan choice and once forced generic), then the JSONL export rate and memory growth,
then the generic plans the figures rely on. It reports; it exits 0 even when a goal is missed.
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
from auditledger._read.cursor import Position  # noqa: E402
from auditledger._read.filters import Filters  # noqa: E402
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
    hour = START + timedelta(days=DAYS / 2)
    with AuditReader(conninfo) as probe:
        head = probe.page(probe.filters(workspace=big), limit=1).items[0].seq or 0
    searches: list[tuple[str, Filters, Position]] = [
        ("newest 50, small workspace", Filters(workspace=small), Position()),
        ("newest 50, big workspace", Filters(workspace=big), Position()),
        ("newest 50, big workspace, one user", Filters(workspace=big, user_id="U17"), Position()),
        ("newest 50, big workspace, one action",
         Filters(workspace=big, action="settings_changed"), Position()),
        ("newest 50, big workspace, one hour",
         Filters(workspace=big, since=hour, until=hour + timedelta(hours=1)), Position()),
        ("100th page of 50 (cursor), big workspace",
         Filters(workspace=big), Position(seq=head - 99 * 50 + 1)),
    ]  # fmt: skip
    out()
    out("== searches: p50 (goal: <= 1 ms at the database, <= 3 ms through AuditReader)")
    out("database: round trip, psycopg, prepared, generic plan; reader: AuditReader.page() after")
    out("10 calls, the server's own plan choice, and forced to the generic plan")
    out(f"{'search':44} {'database':>10} {'reader':>10} {'reader, generic':>16}  goals")
    plans: list[tuple[str, str]] = []
    servers: list[float] = []
    with (
        psycopg.connect(conninfo, autocommit=True) as db,
        AuditReader(conninfo) as reader,
        AuditReader(conninfo, engine=generic) as generic_reader,
    ):
        db.execute("SET plan_cache_mode = force_generic_plan")
        set_json_loads(orjson.loads, db)  # as AuditReader does
        key = reader._cursor_key()
        for label, filters, after in searches:
            sql, params = compiled(generic, filters, after)

            def round_trip(s: str = sql, p: dict[str, Any] = params) -> None:
                db.execute(s, p, prepare=True).fetchall()

            at_db = p50(round_trip, 50)
            cursor = None
            if after.seq is not None:
                from auditledger._read.cursor import encode

                cursor = encode(key, filters.fingerprint(), after)
                # The same cursor as paging 99 times gives: check it, then time that page.
                assert reader.page(filters, limit=50, cursor=cursor).items[0].seq == after.seq - 1

            def via(r: AuditReader, f: Filters = filters, c: str | None = cursor) -> None:
                r.page(f, limit=50, cursor=c)

            through = p50(lambda: via(reader), 50)
            forced = p50(lambda: via(generic_reader), 50)
            ok = at_db <= 1e6 and through <= 3e6 and forced <= 3e6
            out(f"{label:44} {ms(at_db):>10} {ms(through):>10} {ms(forced):>16}  "
                + ("met" if ok else "MISSED"))  # fmt: skip
            prepared, values = numbered(sql, params)
            with psycopg.ClientCursor(db) as cur:
                cur.execute("DEALLOCATE ALL")
                cur.execute(f"PREPARE q AS {prepared}")
                placeholders = ", ".join(["%s"] * len(values))
                server = []
                for _ in range(30):
                    cur.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE q({placeholders})", values)
                    row = cur.fetchone()
                    assert row is not None
                    server.append(row[0][0]["Execution Time"] * 1e6)
                servers.append(statistics.median(server[10:]))
                cur.execute(
                    "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE q("
                    + ", ".join(["%s"] * len(values)) + ")", values,
                )  # fmt: skip
                plans.append((label, "\n".join("    " + r[0] for r in cur.fetchall())))
                cur.execute("DEALLOCATE q")
        export_section(conninfo, reader, big, total)
    generic.dispose()
    out()
    out("== generic plans (plan_cache_mode = force_generic_plan) the figures above rely on")
    for (label, plan), server_ns in zip(plans, servers, strict=True):
        out(f"-- {label}: execution p50 {ms(server_ns)} inside the server")
        out(plan)


def export_section(conninfo: str, reader: AuditReader, big: uuid.UUID, total: int) -> None:
    out()
    out("== JSONL export of the big workspace (goal: >= 100,000 events/s, RSS growth <= 64 MiB)")
    with tempfile.TemporaryDirectory() as tmp:
        recorder = AuditLogger(conninfo, spool_dir=Path(tmp) / "spool")
        exporter = AuditReader(conninfo, actor="bench", recorder=recorder)
        before, peak = rss(), [0]

        def progress(done: int) -> None:
            if done % 50_000 == 0:
                peak[0] = max(peak[0], rss())

        t0 = time.perf_counter()
        result = export_file(exporter, Path(tmp) / "big.jsonl", workspace=big, progress=progress)
        seconds = time.perf_counter() - t0
        peak[0] = max(peak[0], rss())
        exporter.close()
        recorder.close()
        rate = result.events / seconds
        growth = (peak[0] - before) / 2**20
        out(f"{result.events:,} events in {seconds:.1f} s: {rate:,.0f} events/s"
            f" ({'met' if rate >= 100_000 else 'MISSED'}); RSS growth {growth:.1f} MiB"
            f" ({'met' if growth <= 64 else 'MISSED'})")  # fmt: skip
    # The Python API's stream (what SQLite's exports and the viewer use): AuditEvent objects.
    before, peak[0], count = rss(), 0, 0
    t0 = time.perf_counter()
    for _ in reader.iter_events(workspace=big):
        count += 1
        if count % 50_000 == 0:
            peak[0] = max(peak[0], rss())
    seconds = time.perf_counter() - t0
    growth = (max(peak[0], rss()) - before) / 2**20
    verdict = "met" if growth <= 64 else "MISSED"
    out(f"AuditReader.iter_events: {count:,} events in {seconds:.1f} s, {count / seconds:,.0f}"
        f" events/s; RSS growth {growth:.1f} MiB ({verdict})")  # fmt: skip


if __name__ == "__main__":
    main()
