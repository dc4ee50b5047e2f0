#!/usr/bin/env python3
"""Verify and start-up benchmark (issue 14): `auditledger verify` on PostgreSQL, and how soon
every CLI command starts.

    .venv/bin/python bench/verify.py            # two logs of 300,000 events (~2-3 minutes)
    .venv/bin/python bench/verify.py --quick    # 100,000 events

Prints, in one run: each command's ``--help`` start time (a fresh interpreter, median of 3)
against 0.3 s; ``auditledger verify`` on an empty log (start-up until it has read nothing);
verify's events/s over a log spread across 20 workspaces and over one where a workspace holds
90%, with as many processes as the CLI uses by default (start-up excluded: imports are warm),
against 300,000/s, and per CPU-second of the verifying processes (the machine may be shared);
then where a row's time goes in one process: PostgreSQL producing it, psycopg reading it, the
Python checks. Ends with PASS or FAIL per goal; it exits 0 either way.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import itertools
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chain import event_args  # noqa: E402  (the bench mix, shared with bench/chain.py)

from auditledger._chain.checkpoints import generate_keys  # noqa: E402
from auditledger._db.engine import make_engine  # noqa: E402
from auditledger._db.migrate import alembic_config  # noqa: E402
from auditledger._db.rows import Row  # noqa: E402
from auditledger._read.verify import spans  # noqa: E402
from auditledger._read.verify.run import verify_log  # noqa: E402
from auditledger._read.verify.source import _PG_SELECT, Source  # noqa: E402
from auditledger._sinks.postgres import PostgresSink  # noqa: E402
from auditledger._write.capture import capture_event  # noqa: E402
from auditledger._write.prepare import Limits, Preparer  # noqa: E402
from auditledger.cli._app import COMMANDS  # noqa: E402

ENV_URL = "AUDITLEDGER_BENCH_POSTGRES_URL"
CUT_AT = spans.MIN_RANGE
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
START_GOAL = 0.3
RATE_GOAL = 300_000
BATCH = 2_000
CLI = [sys.executable, "-m", "auditledger.cli"]
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36"


def out(text: str = "") -> None:
    print(text, flush=True)


def url_of(server: str, database: str) -> str:
    url = make_url(server).set(drivername="postgresql", database=database)
    return url.render_as_string(hide_password=False)


def admin(server: str, sql: str) -> None:
    with psycopg.connect(url_of(server, "postgres"), autocommit=True) as conn:
        conn.execute(sql)


def make_rows(n: int, workspace_of: Any) -> list[Row]:
    """bench/chain.py's mix: logins, settings changes with JSON values, data exports."""
    preparer = Preparer(Limits())
    now = time.time_ns()
    events = []
    for i in range(n):
        args = event_args(i, workspace_of(i), UA)
        events.append(capture_event(now + i * 1000, *args))
    rows, quarantined = preparer.prepare([uuid.uuid4() for _ in range(n)], events)
    assert not quarantined
    return rows


def new_log(server: str, name: str, workspaces: list[uuid.UUID]) -> str:
    from alembic import command

    admin(server, f'CREATE DATABASE "{name}"')
    url = url_of(server, name)
    engine = make_engine(url)
    try:
        command.upgrade(alembic_config(engine), "head")
    finally:
        engine.dispose()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.cursor().executemany(
            "INSERT INTO workspaces (id, team_id) VALUES (%s, %s)",
            [(w, f"T{i}") for i, w in enumerate(workspaces)],
        )
    return url


def write(url: str, rows: list[Row]) -> None:
    sink = PostgresSink(url, connect_timeout=30)
    for start in range(0, len(rows), BATCH):
        sink.write(rows[start : start + BATCH], [], replay=False)
    sink.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE audit_logs")


def started(args: list[str], runs: int = 3) -> tuple[float, float]:
    """Median (seconds, CPU seconds) of the command in a fresh interpreter."""
    times, cpus = [], []
    for _ in range(runs):
        c0, t0 = children_cpu(), time.perf_counter()
        subprocess.run([*CLI, *args], capture_output=True, check=False)
        times.append(time.perf_counter() - t0)
        cpus.append(children_cpu() - c0)
    return statistics.median(times), statistics.median(cpus)


def children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def cpu() -> float:
    me, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def timed_verify(url: str, workers: int) -> tuple[float, float, int]:
    """(seconds, CPU seconds of this process and its workers, events)."""
    c0, t0 = cpu(), time.perf_counter()
    report = verify_log(url, workers=workers)
    elapsed, used = time.perf_counter() - t0, cpu() - c0
    assert report.ok, report.problems[:3]
    return elapsed, used, report.events


def proc_cpu(pid: int) -> float:
    """CPU seconds a process has used (a PostgreSQL backend's, read from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def breakdown(url: str, events: int) -> tuple[float, float, float]:
    """CPU µs per row in one process, so that the machine's load does not blur them: the
    PostgreSQL backend producing the rows (COPY to /dev/null, read from /proc), psycopg
    reading them (the stream alone, this process), the Python checks (a one-process verify
    of this process, minus the stream)."""
    query = f"{_PG_SELECT} ORDER BY audit_logs.chain_id, audit_logs.chain_seq"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET enable_sort = off; SET max_parallel_workers_per_gather = 0")
        pid = conn.info.backend_pid
        c0 = proc_cpu(pid)
        conn.execute(f"COPY ({query}) TO '/dev/null' (FORMAT binary)")
        server = proc_cpu(pid) - c0
    c0 = time.process_time()
    for _ in Source(url).rows(None):
        pass
    stream = time.process_time() - c0
    c0 = time.process_time()
    verify_log(url, workers=1)
    whole = time.process_time() - c0
    per = 1e6 / events
    return server * per, stream * per, max(0.0, whole - stream) * per


def hashing_floor(url: str) -> float:
    """CPU µs per row of the SHA-256 calls no verifier can skip: one per value present (its
    commitment, with its salt) and one per link, on rows already read (20,000 at a time, the
    reading not timed). With reading the rows, a floor under any verifier written in Python
    on this machine."""
    from auditledger._chain.v2 import ERASABLE, TAGS

    fields = [(index, TAGS[name]) for name, _, index in ERASABLE]
    sha256 = hashlib.sha256
    stream = Source(url).rows(None)
    gc.disable()  # as the verifier's walk does: rows by the million
    try:
        seconds, count = _hash_rows(stream, fields, sha256)
    finally:
        gc.enable()
    return seconds * 1e6 / max(1, count)


def _hash_rows(stream: Any, fields: list[tuple[int, bytes]], sha256: Any) -> tuple[float, int]:
    from auditledger._chain.v2 import SALT_BYTES
    from auditledger._read.verify.v2 import R_CANONICAL, R_SALT

    previous = bytes(32)
    seconds, count = 0.0, 0
    while rows := list(itertools.islice(stream, 20_000)):
        c0 = time.process_time()
        for row in rows:
            salt, used = row[R_SALT] or b"", 0
            for index, tag in fields:
                value = row[index]
                if value is not None:
                    sha256(salt[used : used + SALT_BYTES] + tag + value.encode()).digest()
                    used += SALT_BYTES
            link = b"\x00" + previous + (1).to_bytes(8, "big") + row[R_CANONICAL]
            previous = sha256(link).digest()
        seconds += time.process_time() - c0
        count += len(rows)
    return seconds, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 events per log")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = os.environ.get(ENV_URL) or os.environ.get("AUDITLEDGER_TEST_POSTGRES_URL")
    server = server or DEFAULT_SERVER
    n = args.events or (100_000 if args.quick else 300_000)
    workers = min(os.cpu_count() or 1, 4)  # as `auditledger verify` by default
    verdicts: list[tuple[str, bool]] = []
    tag = f"bench_verify_{os.getpid()}"
    created: list[str] = []
    floor_note = ""

    out(f"## start-up (a fresh interpreter each, median of 3; goal <= {START_GOAL} s)")
    worst = worst_cpu = 0.0
    for command in ["--help", *COMMANDS]:
        argv = ["--help"] if command == "--help" else [command, "--help"]
        seconds, used = started(argv)
        worst, worst_cpu = max(worst, seconds), max(worst_cpu, used)
        out(f"  auditledger {' '.join(argv):<28} {seconds:.3f} s  ({used:.3f} CPU-s)")
    verdicts.append(
        (f"every command's --help <= {START_GOAL} s (worst {worst:.3f} s)", worst <= START_GOAL)
    )
    verdicts.append(
        (
            f"every command's --help <= {START_GOAL} CPU-s (worst {worst_cpu:.3f} CPU-s)",
            worst_cpu <= START_GOAL,
        )
    )

    try:
        workspaces = [uuid.uuid4() for _ in range(20)]
        created.append(f"{tag}_empty")
        empty = new_log(server, created[-1], workspaces)
        keys = Path(tempfile.mkdtemp()) / "keys"
        generate_keys(keys)
        public = str(keys / "signing.pub")
        done = subprocess.run([*CLI, "verify", "--public-key", public, "--database-url", empty],
                              capture_output=True, text=True, check=False)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr  # intact, and no checkpoint
        seconds, used = started(["verify", "--public-key", public, "--database-url", empty])
        out(f"  auditledger verify, empty log            {seconds:.3f} s  ({used:.3f} CPU-s)")
        verdicts.append(
            (
                f"verify of an empty log starts in <= {START_GOAL} s ({seconds:.3f} s)",
                seconds <= START_GOAL,
            )
        )

        logs = {}
        shapes = {
            "spread": lambda i: workspaces[i % 20] if i % 10 else None,
            "dominant": lambda i: workspaces[0] if i % 10 else workspaces[1 + i % 19],
        }
        for shape, workspace_of in shapes.items():
            out(f"\nwriting the {shape} log ({n:,} events)...")
            created.append(f"{tag}_{shape}")
            logs[shape] = new_log(server, created[-1], workspaces)
            write(logs[shape], make_rows(n, workspace_of))

        out(f"\n## the largest share of {workers} processes (1 / it: the speed-up free cores give)")
        for shape, url in logs.items():
            extents = Source(url).extents()
            for label, smallest in ((shape, CUT_AT), (f"{shape}, uncut", 10**15)):
                shares = spans.plan(extents, workers, smallest) or []
                largest = max((s.load for s in shares), default=n) / n
                out(f"  {label:<16} {largest:.0%} of the rows")

        out(f"\n## verify on PostgreSQL ({workers} processes, as the CLI; goal >= {RATE_GOAL:,}/s)")
        # "dominant, uncut": the dominant chain walked by one process, as before ranges (the
        # other chains shared): what cutting it into ranges buys, under the same load.
        runs = {**logs, "dominant, uncut": logs["dominant"]}
        rates: dict[str, list[tuple[float, float]]] = {s: [] for s in runs}
        for round_no in range(args.rounds):
            for shape, url in runs.items():  # alternating: all see the same load
                spans.MIN_RANGE = 10**15 if shape.endswith("uncut") else CUT_AT
                elapsed, used, events = timed_verify(url, workers)
                rates[shape].append((events / elapsed, events / used))
                out(
                    f"  round {round_no + 1} {shape:<16} {events / elapsed:>9,.0f} events/s"
                    f"  {events / used:>9,.0f} per CPU-second (of the verifying processes)"
                )
        spans.MIN_RANGE = CUT_AT
        for shape, got in rates.items():
            rate = statistics.median(r for r, _ in got)
            per_cpu = statistics.median(c for _, c in got)
            out(f"  {shape:<16} median {rate:>9,.0f} events/s, {per_cpu:,.0f} per CPU-second")
            if shape in logs:
                verdicts.append(
                    (f"verify {shape} >= {RATE_GOAL:,}/s ({rate:,.0f}/s)", rate >= RATE_GOAL)
                )

        out("\n## where a row's CPU time goes (dominant log, one process)")
        server_us, psycopg_us, checks_us = breakdown(logs["dominant"], n)
        total_us = server_us + psycopg_us + checks_us
        for label, us in (
            ("PostgreSQL producing it", server_us),
            ("psycopg reading it", psycopg_us),
            ("Python checks", checks_us),
        ):
            out(f"  {label:<26} {us:5.2f} µs  ({us / total_us:.0%})")
        out(f"  {1e6 / total_us:,.0f} events per CPU-second, PostgreSQL's included")
        hashing_us = hashing_floor(logs["dominant"])
        floor_us = server_us + psycopg_us + hashing_us
        cores = os.cpu_count() or 1
        most = cores * 1e6 / floor_us
        label = "of the checks, SHA-256 alone"
        out(f"  {label:<26} {hashing_us:5.2f} µs  (a commitment a value, a link a row)")
        out(f"  floor (producing + reading + SHA-256) {floor_us:.2f} µs: at most {most:,.0f}/s")
        out(f"    on all {cores} cores with nothing else running (no JSON, no comparison, no walk)")
        floor_note = (
            f"verify's floor on these {cores} cores: {most:,.0f}/s (a limit of the machine"
            f" for any verifier in Python, against the goal of {RATE_GOAL:,}/s)"
        )
    finally:
        for name in reversed(created):
            admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    out(f"\nload average (1, 5, 15 min): {load} on {os.cpu_count()} CPUs")
    for label, ok in verdicts:
        out(f"  {'PASS' if ok else 'FAIL'}  {label}")
    if floor_note:
        out(f"  info  {floor_note}")


if __name__ == "__main__":
    main()
