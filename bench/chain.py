"""What tamper evidence costs: writer throughput with chaining vs raw binary COPY, and verify speed.

    python bench/chain.py [--server-url postgresql://postgres@127.0.0.1:5432/postgres]
                          [--events 200000] [--rounds 3] [--workspaces 20]
                          [--verify-rounds 3]

Both write paths store the same prepared rows in batches of 2,000, one transaction per batch,
into fresh databases: "raw" is the write path before tamper evidence (binary COPY of the
seed's columns into the 0001 schema), "chained" is PostgresSink.write (canonical form, salts,
advisory lock, chain heads, links, binary COPY into the 0002 schema). Rounds alternate so both
see the same machine load; the median is printed. Then verify_log reads the last chained
database back ``--verify-rounds`` times with as many processes as `auditledger verify` uses
by default, and with one (medians printed, with the load average: the machine is shared).
Databases are created and dropped by the script.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from alembic import command
from sqlalchemy.engine import make_url

from auditledger._db.engine import make_engine
from auditledger._db.migrate import alembic_config
from auditledger._db.rows import Row
from auditledger._db.schema import AUDIT_LOG_COLUMNS
from auditledger._read.verify.run import verify_log
from auditledger._sinks.postgres import PostgresSink
from auditledger._write.capture import capture_event
from auditledger._write.prepare import Limits, Preparer

BATCH = 2_000
_RAW_COPY = f"COPY audit_logs ({', '.join(AUDIT_LOG_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_RAW_TYPES = [
    "uuid", "text", "uuid", "text", "text", "text", "text", "text",
    "jsonb", "jsonb", "jsonb", "timestamptz", "jsonb",
]  # fmt: skip


def _url(server: str, database: str) -> str:
    url = make_url(server).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


def _admin(server: str, sql: str) -> None:
    with psycopg.connect(_url(server, "postgres"), autocommit=True) as conn:
        conn.execute(sql)


def _migrate(url: str, revision: str) -> None:
    engine = make_engine(url)
    try:
        command.upgrade(alembic_config(engine), revision)
    finally:
        engine.dispose()


def event_args(i: int, ws: uuid.UUID | None, ua: str) -> tuple[Any, ...]:
    """The ``i``-th event of the bench's mix, as ``capture_event`` takes it after the time."""
    user = f"U{i % 5000:05d}"
    kind = i % 3
    if kind == 0:
        return ("login", user, ws, f"203.0.113.{i % 250}", ua, "user", user, None, None, None)
    if kind == 1:
        return (
            "settings_changed", user, ws, None, None, "settings", f"digest_{i % 17}",
            None, {"channel": "C0001", "enabled": True}, {"channel": f"C{i:08d}"},
        )  # fmt: skip
    return (
        "data_export_requested", user, ws, f"198.51.100.{i % 250}", ua, "user", user,
        {"requested_at": "2026-11-26T10:00:00+00:00", "format": "csv", "rows": i},
        None, None,
    )  # fmt: skip


def make_rows(n: int, workspaces: list[uuid.UUID]) -> list[Row]:
    """Prepared rows of 300-500 bytes, spread over the workspaces (and no workspace), in the mix
    of the seed's helpers: logins (IP, user agent, no JSON), settings changes (previous and new
    value) and data exports (details)."""
    preparer = Preparer(Limits())
    now = time.time_ns()
    ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36"
    events = []
    for i in range(n):
        ws = workspaces[i % len(workspaces)] if i % 10 else None
        args = event_args(i, ws, ua)
        events.append(capture_event(now + i * 1000, *args))
    ids = [uuid.uuid4() for _ in range(n)]
    rows, quarantined = preparer.prepare(ids, events)
    assert not quarantined
    return rows


def _workspaces(url: str, ids: list[uuid.UUID]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.cursor().executemany(
            "INSERT INTO workspaces (id, team_id) VALUES (%s, %s)",
            [(w, f"T{i}") for i, w in enumerate(ids)],
        )


def write_raw(url: str, rows: list[Row]) -> float:
    sink = PostgresSink(url.replace("postgresql+psycopg", "postgresql"), connect_timeout=30)
    conn = sink._connection()  # the same connection set-up (raw jsonb dumper) as the writer
    started = time.perf_counter()
    for start in range(0, len(rows), BATCH):
        with conn.transaction(), conn.cursor().copy(_RAW_COPY) as copy:
            copy.set_types(_RAW_TYPES)
            for row in rows[start : start + BATCH]:
                copy.write_row(row)
    elapsed = time.perf_counter() - started
    sink.close()
    return elapsed


def write_chained(url: str, rows: list[Row]) -> float:
    sink = PostgresSink(url, connect_timeout=30)
    sink._connection()
    started = time.perf_counter()
    for start in range(0, len(rows), BATCH):
        sink.write(rows[start : start + BATCH], [], replay=False)
    elapsed = time.perf_counter() - started
    sink.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--server-url",
        default=os.environ.get(
            "AUDITLEDGER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workspaces", type=int, default=20)
    parser.add_argument("--verify-rounds", type=int, default=3)
    args = parser.parse_args()
    server: str = args.server_url
    tag = f"bench_chain_{os.getpid()}"
    created: list[str] = []

    def database(name: str, template: str | None = None) -> str:
        full = f"{tag}_{name}"
        _admin(
            server, f'CREATE DATABASE "{full}"' + (f' TEMPLATE "{template}"' if template else "")
        )
        created.append(full)
        return full

    try:
        workspaces = [uuid.uuid4() for _ in range(args.workspaces)]
        templates = {}
        for kind, revision in (("raw", "0001"), ("chained", "head")):
            name = database(f"{kind}_template")
            url = _url(server, name)
            _migrate(url, revision)
            _workspaces(url, workspaces)
            templates[kind] = name
        print(f"preparing {args.events:,} rows...", file=sys.stderr)
        rows = make_rows(args.events, workspaces)
        writers: dict[str, Callable[[str, list[Row]], float]] = {
            "raw": write_raw,
            "chained": write_chained,
        }
        rates: dict[str, list[float]] = {"raw": [], "chained": []}
        last_chained = ""
        for round_no in range(args.rounds):
            for kind, write in writers.items():
                name = database(f"{kind}_{round_no}", templates[kind])
                elapsed = write(_url(server, name), rows)
                rates[kind].append(args.events / elapsed)
                if kind == "chained":
                    last_chained = name
                print(f"round {round_no + 1} {kind}: {args.events / elapsed:,.0f} events/s")
        raw, chained = statistics.median(rates["raw"]), statistics.median(rates["chained"])

        # As `auditledger verify` runs by default (one process per CPU, at most 4), and with
        # one process, alternating so both see the same machine load.
        default_workers = min(os.cpu_count() or 1, 4)
        verify_rates: dict[int, list[float]] = {default_workers: [], 1: []}
        for round_no in range(args.verify_rounds):
            for workers, rates_of in verify_rates.items():
                started = time.perf_counter()
                report = verify_log(_url(server, last_chained), workers=workers)
                verify_elapsed = time.perf_counter() - started
                assert report.ok, report.problems[:5]
                assert report.events == args.events
                rates_of.append(report.events / verify_elapsed)
                print(
                    f"round {round_no + 1} verify, {workers} process(es):"
                    f" {rates_of[-1]:,.0f} events/s"
                )
        verify = statistics.median(verify_rates[default_workers])
        verify_one = statistics.median(verify_rates[1])
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())

        table: list[tuple[str, Any]] = [
            ("events per run", f"{args.events:,}"),
            ("raw binary COPY (0001 schema)", f"{raw:,.0f} events/s"),
            ("chained (PostgresSink.write)", f"{chained:,.0f} events/s"),
            ("chained / raw", f"{chained / raw:.0%}  (goal >= 50%)"),
            (
                f"verify, {default_workers} processes (default)",
                f"{verify:,.0f} events/s  (goal >= 200,000)",
            ),
            ("verify, 1 process", f"{verify_one:,.0f} events/s"),
            ("load average (1, 5, 15 min)", load),
        ]
        print()
        for label, value in table:
            print(f"{label:<32} {value}")
    finally:
        for name in reversed(created):
            _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
