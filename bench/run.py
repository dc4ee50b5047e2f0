#!/usr/bin/env python3
"""auditledger benchmark: every figure measured side by side, in one run, on this machine.

    .venv/bin/python bench/run.py            # ~1-3 minutes
    .venv/bin/python bench/run.py --quick    # ~30 seconds, smaller counts, one repetition

It reports; it is not a test: it exits 0 even when a goal is missed, and says which. The
machine is shared and noisy, so every library figure is printed beside a baseline measured a
few seconds earlier in the same process, and repeated figures are medians.

PostgreSQL comes from AUDITLEDGER_BENCH_POSTGRES_URL (default: the local server as postgres).
Each run creates uniquely named databases and drops them at the end, even on error.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import logging.handlers
import os
import queue
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.types.json import Jsonb
from sqlalchemy.engine import make_url

# The TCP proxy lives with the tests; the repository root makes it importable from here.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import (  # noqa: E402  (bench/common.py, beside this file)
    DEFAULT_SERVER,
    ENV_URL,
    POOL_SIZE,
    RUN_ID,
    Databases,
    Event,
    Latency,
    conninfo_for,
    count_rows,
    fmt_ns,
    fmt_rate,
    make_pool,
    noop_log,
    out,
    paced_calls,
    perf_ns,
    quiet_library,
    reset_table,
    section,
    sql_one,
    timed_calls,
)

from auditledger import AuditLogger  # noqa: E402
from auditledger._db.migrate import upgrade  # noqa: E402
from auditledger._db.schema import AUDIT_LOG_COLUMNS  # noqa: E402
from auditledger._ids import uuid7_batch  # noqa: E402
from tests.tcp_proxy import TcpProxy  # noqa: E402

# ---- scale -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    reps: int  # repetitions of the cheap side-by-side measurements (medians are printed)
    caller_calls: int  # library calls per repetition (section 1)
    naive_calls: int  # autocommit INSERTs per repetition
    stdlib_calls: int
    throughput_events: int  # events per throughput run (sections 2 and 7)
    outage_calls: int  # section 3 (the issue asks for 20,000)
    cut_phases: tuple[float, float, float, float]  # seconds passing, hanging, refusing, restored
    overload_events: int  # section 5 (the issue asks for 200,000)
    replay_events: int  # section 6


FULL = Scale(3, 30_000, 1_000, 30_000, 100_000, 20_000, (2.0, 3.0, 2.0, 2.0), 200_000, 100_000)
QUICK = Scale(1, 10_000, 300, 10_000, 20_000, 20_000, (1.0, 1.5, 1.0, 1.0), 200_000, 20_000)


def value_bytes(pool: Sequence[Event]) -> tuple[float, float]:
    """Mean sizes: the JSON values serialised, and the user id, IP and user agent."""
    json_sizes = [sum(len(orjson.dumps(v)) for v in ev[7:10]) for ev in pool]
    other = [len(ev[1]) + len(ev[3]) + len(ev[4]) for ev in pool]
    return statistics.fmean(json_sizes), statistics.fmean(other)


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def via_proxy(url: str, proxy: TcpProxy) -> str:
    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(False)


def proxy_for(url: str) -> TcpProxy:
    parsed = make_url(url)
    return TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)


# ---- section 1: caller cost --------------------------------------------------------------


@dataclass
class Results:
    """Everything the summary table needs."""

    rows: list[tuple[str, str, str, bool | None]] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)

    def add(self, name: str, goal: str, measured: str, ok: bool | None) -> None:
        self.rows.append((name, goal, measured, ok))


def naive_insert_latencies(url: str, pool: Sequence[Event], n: int) -> array[int]:
    """The seed's behaviour: one autocommit INSERT per event, on the caller's thread."""
    cols = [c for c in AUDIT_LOG_COLUMNS if c != "sanitised"]
    sql = f"INSERT INTO audit_logs ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})"
    lat = array("q", bytes(8 * n))
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(n):
            a, u, w, ip, ua, r, rid, d, p, nv = pool[i % len(pool)]
            t0 = perf_ns()
            conn.execute(
                sql,
                (
                    uuid.uuid4(),
                    u,
                    w,
                    ip,
                    ua,
                    str(a),
                    r,
                    rid,
                    Jsonb(d),
                    Jsonb(p),
                    Jsonb(nv),
                    datetime.now(UTC),
                ),
            )
            lat[i] = perf_ns() - t0
    return lat


def stdlib_latencies(pool: Sequence[Event], n: int) -> array[int]:
    """Reference point: logging.Logger.info through a QueueHandler (the stdlib's async path)."""
    q: queue.SimpleQueue[Any] = queue.SimpleQueue()
    handler = logging.handlers.QueueHandler(q)
    logger = logging.getLogger(f"bench_stdlib_reference_{RUN_ID}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    lat = array("q", bytes(8 * n))
    try:
        for i in range(n):
            a, u, w, ip, ua, _r, _rid, d, p, nv = pool[i % len(pool)]
            t0 = perf_ns()
            logger.info(
                "audit %s user=%s workspace=%s",
                a,
                u,
                w,
                extra={"ip": ip, "ua": ua, "details": d, "previous": p, "new": nv},
            )
            lat[i] = perf_ns() - t0
    finally:
        logger.removeHandler(handler)
    return lat


def bench_caller(db: Databases, pool: list[Event], scale: Scale, tmp: Path, res: Results) -> None:
    section("1. Caller cost of log_audit_event (writer running, GC on)")
    url = db.clone("caller")
    out(
        f"   library: {scale.caller_calls:,} calls x {scale.reps}, bursts of 100 then 5 ms pause "
        "(<= 20k events/s offered), default options"
    )
    lib_runs, naive_runs, std_runs, noop_runs = [], [], [], []
    for rep in range(scale.reps):
        noop_runs.append(Latency.of(timed_calls(noop_log, pool, scale.caller_calls)))
        audit = AuditLogger(url, spool_dir=tmp / f"caller-{rep}")
        try:
            lib_runs.append(
                Latency.of(paced_calls(audit.log_audit_event, pool, scale.caller_calls, 100, 0.005))
            )
            if not audit.flush(60):
                out("   warning: flush after the caller run timed out")
        finally:
            audit.close(10)
        std_runs.append(Latency.of(stdlib_latencies(pool, scale.stdlib_calls)))
        naive_runs.append(Latency.of(naive_insert_latencies(url, pool, scale.naive_calls)))
    lib, naive, std, noop = (Latency.median(r) for r in (lib_runs, naive_runs, std_runs, noop_runs))
    ratio50 = naive.p50 / lib.p50
    ratio99 = naive.p99 / lib.p99
    out(f"   log_audit_event             {lib.row()}")
    out(f"   naive autocommit INSERT     {naive.row()}")
    out(f"   stdlib logger.info+QueueHandler {std.row()}")
    out(f"   empty call, same shape      {noop.row()}   (harness cost, included above)")
    out(
        f"   naive / library: {ratio50:,.0f}x at p50, {ratio99:,.0f}x at p99;"
        f" stdlib / library: {std.p50 / lib.p50:.1f}x at p50"
    )
    res.values["caller_p50"] = lib.p50
    res.values["caller_p99"] = lib.p99
    res.add("1 caller p50", "<= 3 µs", fmt_ns(lib.p50), lib.p50 <= 3_000)
    res.add(
        "1 vs naive INSERT (p50)",
        ">= 100x cheaper",
        f"{ratio50:,.0f}x ({fmt_ns(naive.p50)} vs {fmt_ns(lib.p50)})",
        ratio50 >= 100,
    )
    res.add(
        "1 stdlib QueueHandler p50",
        "reference",
        f"{fmt_ns(std.p50)} ({std.p50 / lib.p50:.1f}x library)",
        None,
    )


# ---- sections 2 and 7: throughput --------------------------------------------------------

COPY_SQL = f"COPY audit_logs ({', '.join(AUDIT_LOG_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
COPY_TYPES = [
    "uuid", "text", "uuid", "text", "text", "text", "text", "text",
    "jsonb", "jsonb", "jsonb", "timestamptz", "jsonb",
]  # fmt: skip


class _Raw:
    """Marker type for JSON already serialised (what the raw COPY baseline writes)."""


class RawJsonbDumper(Dumper):
    """jsonb's binary format is a version byte then the text: no second serialisation."""

    format = Format.BINARY

    def dump(self, obj: Any) -> bytes:
        return b"\x01" + obj  # type: ignore[no-any-return]


def raw_copy(url: str, pool: Sequence[Event], n: int, chunk: int = 10_000) -> float:
    """The practical limit: the same rows serialised with orjson and sent by binary COPY,
    10,000 rows per transaction. Returns seconds from connecting to the last commit."""
    ws = {w: uuid.UUID(w) for w in {ev[2] for ev in pool}}
    dumps = orjson.dumps
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        info = psycopg.types.TypeInfo.fetch(conn, "jsonb")
        assert info is not None
        conn.adapters.register_dumper(_Raw, type("D", (RawJsonbDumper,), {"oid": info.oid}))
        size = len(pool)
        for begin in range(0, n, chunk):
            count = min(chunk, n - begin)
            ids = uuid7_batch([time.time_ns()] * count)
            with conn.transaction(), conn.cursor().copy(COPY_SQL) as copy:
                copy.set_types(COPY_TYPES)
                for k in range(count):
                    a, u, w, ip, ua, r, rid, d, p, nv = pool[(begin + k) % size]
                    copy.write_row(
                        (ids[k], u, ws[w], ip, ua, str(a), r, rid,
                         dumps(d), dumps(p), dumps(nv), datetime.now(UTC), None)
                    )  # fmt: skip
    return time.perf_counter() - started


@dataclass
class Throughput:
    seconds: float
    events: int
    caller: Latency
    spooled: int = 0
    replayed: int = 0

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def library_throughput(
    url: str, pool: Sequence[Event], n: int, spool: Path, **options: Any
) -> Throughput:
    """From the first call until flush() returns: every event is in the database."""
    audit = AuditLogger(url, spool_dir=spool, **options)
    try:
        started = time.perf_counter()
        lat = timed_calls(audit.log_audit_event, pool, n)
        if not audit.flush(300):
            raise RuntimeError("flush() timed out in the throughput run")
        seconds = time.perf_counter() - started
        stats = audit.stats()
    finally:
        audit.close(10)
    return Throughput(seconds, n, Latency.of(lat), stats.spooled, stats.replayed)


def bench_throughput(
    db: Databases, pool: list[Event], scale: Scale, tmp: Path, res: Results
) -> None:
    n = scale.throughput_events
    section(f"2+7. Sustained writer throughput into PostgreSQL: {n:,} events, {scale.reps} rep(s)")
    out("   library: tight loop of calls, queue_size >= events (nothing spills), then flush();")
    out("   raw: the same rows, orjson + psycopg binary COPY, 10,000 rows per transaction;")
    out("   every run starts on an empty audit_logs (same indexes) after a CHECKPOINT.")
    url = db.clone("throughput")
    raw: list[float] = []
    lib: list[Throughput] = []
    wal: list[Throughput] = []
    big = {"queue_size": n + 1}
    for rep in range(scale.reps):
        reset_table(url)
        raw.append(n / raw_copy(url, pool, n))
        assert count_rows(url) == n
        reset_table(url)
        lib.append(library_throughput(url, pool, n, tmp / f"tp-{rep}", **big))
        if count_rows(url) != n:
            out(f"   warning: {count_rows(url):,} rows after a library run of {n:,}")
        reset_table(url)
        wal.append(library_throughput(url, pool, n, tmp / f"tpw-{rep}", write_ahead=True, **big))
        if count_rows(url) != n:
            out(f"   warning: {count_rows(url):,} rows after a write-ahead run of {n:,}")
    # The default queue (10,000): a flood this fast overflows it, and the excess goes through
    # the spool and back. Shown once, for information.
    reset_table(url)
    dflt = library_throughput(url, pool, n, tmp / "tp-default")
    dflt_ok = count_rows(url) == n
    raw_rate = statistics.median(raw)
    lib_rate = statistics.median(t.rate for t in lib)
    wal_rate = statistics.median(t.rate for t in wal)
    lib_caller = Latency.median([t.caller for t in lib])
    wal_caller = Latency.median([t.caller for t in wal])

    def line(label: str, rate: float, runs: str, note: str) -> None:
        out(f"   {label:<28} {fmt_rate(rate):>10}   runs: {runs:<26} {note}")

    def each(rates: Iterator[float] | list[float]) -> str:
        return ", ".join(f"{x:,.0f}" for x in rates)

    line("raw binary COPY", raw_rate, each(raw), "")
    line("library", lib_rate, each(t.rate for t in lib), f"= {lib_rate / raw_rate:.0%} of raw")
    line(
        "library, write_ahead=True",
        wal_rate,
        each(t.rate for t in wal),
        f"= {wal_rate / raw_rate:.0%} of raw, {wal_rate / lib_rate:.0%} of write_ahead off",
    )
    line(
        "library, default queue_size",
        dflt.rate,
        f"{dflt.rate:,.0f}",
        f"({dflt.spooled:,} spilled to the spool and replayed; all rows stored: {dflt_ok})",
    )
    out(f"   caller during the flood, write_ahead off: {lib_caller.row()}")
    out(f"   caller during the flood, write_ahead on:  {wal_caller.row()}")
    res.values["lib_rate"] = lib_rate
    res.add(
        "2 writer vs raw COPY",
        ">= 50% of raw",
        f"{lib_rate / raw_rate:.0%} ({fmt_rate(lib_rate)} vs {fmt_rate(raw_rate)})",
        lib_rate / raw_rate >= 0.5,
    )
    res.add(
        "7 write_ahead cost",
        ">= 90% of off",
        f"{fmt_rate(wal_rate)} = {wal_rate / lib_rate:.0%} of off; caller p50 "
        f"{fmt_ns(wal_caller.p50)} vs {fmt_ns(lib_caller.p50)}",
        wal_rate / lib_rate >= 0.9,
    )
    res.add(
        "2 default queue flood",
        "all rows stored",
        f"{fmt_rate(dflt.rate)}, {dflt.spooled:,} via spool",
        dflt_ok,
    )


def bench_sqlite(
    ws_ids: list[str], pool: list[Event], scale: Scale, tmp: Path, res: Results
) -> None:
    n = scale.throughput_events // 2
    section(f"2b. Writer throughput into SQLite (a file in a temp folder): {n:,} events")
    path = tmp / "bench.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.executemany(
            "INSERT INTO workspaces (id, team_id, name) VALUES (?, ?, ?)",
            [(uuid.UUID(w).hex, f"T{i}", f"Workspace {i}") for i, w in enumerate(ws_ids)],
        )
    t = library_throughput(url, pool, n, tmp / "tp-sqlite", queue_size=n + 1)
    out(f"   library into SQLite              {fmt_rate(t.rate):>12}   caller {t.caller.row()}")
    res.add("2b SQLite writer", "measured", fmt_rate(t.rate), None)


# ---- section 3: calls with the database unreachable --------------------------------------


def bench_unreachable(
    db: Databases, pool: list[Event], scale: Scale, tmp: Path, res: Results
) -> None:
    n = scale.outage_calls
    section(f"3. {n:,} calls while the database hangs (proxy forwards nothing)")
    url = db.clone("unreachable")
    spool = tmp / "unreachable"
    with proxy_for(url) as proxy:
        audit = AuditLogger(via_proxy(url, proxy), spool_dir=spool)  # defaults: write_timeout 10 s
        warm = 10
        for i in range(warm):
            audit.log_audit_event("login", user_id=f"warm{i}", resource_id=f"w{i}")
        audit.flush(10)  # the writer now holds a connection, which is about to go silent
        proxy.hang()
        raised = 0
        lat = array("q", bytes(8 * n))
        size = len(pool)
        for i in range(n):
            a, u, w, ip, ua, r, _rid, d, p, nv = pool[i % size]
            t0 = perf_ns()
            try:
                audit.log_audit_event(
                    a, user_id=u, workspace_id=w, ip_address=ip, user_agent=ua, resource=r,
                    resource_id=f"o{i}", details=d, previous_value=p, new_value=nv,
                )  # fmt: skip
            except Exception:  # noqa: BLE001 - counted: the library promises this never happens
                raised += 1
            lat[i] = perf_ns() - t0
        stats = audit.stats()
        t0 = perf_ns()
        close_ok = audit.close(timeout=1.0)
        close_ns = perf_ns() - t0
        after = audit.stats()
        proxy.refuse()  # ends the stuck connection: the old writer spools its batch and stops
        wait_for_writer(audit)
        # Nothing was lost: a new logger on the same spool replays it. Through the same URL,
        # since a spool segment replays only into the database it names (by host and port).
        proxy.restore()
        with AuditLogger(via_proxy(url, proxy), spool_dir=spool) as survivor:
            replay_ok = survivor.flush(120)
    in_flight = warm + n - stats.written - stats.queue_depth - stats.spooled
    calls = Latency.of(lat)
    normal = res.values.get("caller_p99", float("nan"))
    out(f"   calls: {calls.row()}   (normal p99 {fmt_ns(normal)}); raised: {raised}")
    out(
        f"   after the calls: {stats.queue_depth:,} in the queue, {stats.spooled:,} spilled to the "
        f"spool by callers, {in_flight:,} in the stuck batch"
    )
    out(
        f"   close(timeout=1) returned {close_ok} after {close_ns / 1e9:.3f} s; "
        f"spooled now {after.spooled:,}"
    )
    total, distinct = sql_one(url, "SELECT count(*), count(DISTINCT resource_id) FROM audit_logs")
    out(
        f"   replayed afterwards by a new logger: flush {replay_ok}; rows {total:,}, "
        f"distinct {distinct:,}, expected {warm + n:,}"
    )
    res.add(
        "3 calls, DB hanging",
        "none raise, no I/O wait",
        f"raised {raised}, p50 {fmt_ns(calls.p50)} p99 {fmt_ns(calls.p99)} max {fmt_ns(calls.max)}",
        # Waiting for the database would take seconds (connect and write deadlines are 10 s);
        # a spill to the local spool is a buffered file append.
        raised == 0 and calls.max < 100e6,
    )
    res.add(
        "3 close(timeout=1)",
        "returns in <= 1 s",
        f"{close_ns / 1e9:.3f} s",
        close_ns <= 1.05e9,
    )
    res.add(
        "3 nothing lost",
        "all replayed once",
        f"{total:,} rows / {distinct:,} distinct / {warm + n:,} sent",
        total == distinct == warm + n,
    )


# ---- section 4: caller latency during a cut ----------------------------------------------


def bench_cut(db: Databases, pool: list[Event], scale: Scale, tmp: Path, res: Results) -> None:
    phases = ("passing", "hanging", "refusing", "restored")
    durations = dict(zip(phases, scale.cut_phases, strict=True))
    section(
        "4. Caller latency during a cut: a paced stream (20 calls every 2 ms) while the proxy is "
        + ", ".join(f"{p} {durations[p]:g} s" for p in phases)
    )
    url = db.clone("cut")
    lat: dict[str, list[int]] = {p: [] for p in phases}
    sent = 0
    size = len(pool)
    with proxy_for(url) as proxy:
        # write_timeout=1: the hang is detected within the phase, as a production setting would.
        audit = AuditLogger(via_proxy(url, proxy), spool_dir=tmp / "cut", write_timeout=1.0)
        log = audit.log_audit_event
        actions: dict[str, Callable[[], None]] = {
            "passing": lambda: None,
            "hanging": proxy.hang,
            "refusing": proxy.refuse,
            "restored": proxy.restore,
        }
        for phase in phases:
            actions[phase]()
            bucket = lat[phase]
            end = time.monotonic() + durations[phase]
            while time.monotonic() < end:
                for _ in range(20):
                    a, u, w, ip, ua, r, _rid, d, p, nv = pool[sent % size]
                    sent += 1
                    t0 = perf_ns()
                    log(
                        a, user_id=u, workspace_id=w, ip_address=ip, user_agent=ua, resource=r,
                        resource_id=str(sent), details=d, previous_value=p, new_value=nv,
                    )  # fmt: skip
                    bucket.append(perf_ns() - t0)
                time.sleep(0.002)
        t0 = perf_ns()
        flushed = audit.flush(120)
        flush_s = (perf_ns() - t0) / 1e9
        stats = audit.stats()
        audit.close(10)
    total, distinct = sql_one(url, "SELECT count(*), count(DISTINCT resource_id) FROM audit_logs")
    for phase in phases:
        out(f"   {phase:<9} {Latency.of(lat[phase]).row()}   ({len(lat[phase]):,} calls)")
    out(
        f"   flush after restore: {flush_s:.2f} s ({flushed}); written {stats.written:,}, "
        f"spooled {stats.spooled:,}, replayed {stats.replayed:,}, "
        f"dropped {sum(stats.dropped.values())}"
    )
    out(f"   rows {total:,}, distinct events {distinct:,}, sent {sent:,}")
    worst = max(Latency.of(lat[p]).p99 for p in phases[1:])
    res.add(
        "4 cut: caller p99",
        "vs passing",
        f"passing {fmt_ns(Latency.of(lat['passing']).p99)}, worst cut phase {fmt_ns(worst)}",
        None,
    )
    res.add(
        "4 cut: exactly once",
        "rows = distinct = sent",
        f"{total:,} / {distinct:,} / {sent:,}",
        total == distinct == sent and flushed,
    )


# ---- section 5: memory ceiling under overload (child process) ----------------------------


def memory_child(url: str, spool: str, n: int, workspace_ids: list[str]) -> None:
    """Runs in a fresh interpreter: RSS growth while n events arrive and the database hangs."""
    pool = make_pool(workspace_ids)
    audit = AuditLogger(url, spool_dir=spool)
    lat = array("q", bytes(8 * n))  # allocated before the baseline: the harness's, not ours
    log = audit.log_audit_event
    size = len(pool)
    gc.collect()
    base = rss_bytes()
    peak = base
    started = time.perf_counter()
    for i in range(n):
        a, u, w, ip, ua, r, rid, d, p, nv = pool[i % size]
        t0 = perf_ns()
        log(
            a, user_id=u, workspace_id=w, ip_address=ip, user_agent=ua, resource=r,
            resource_id=rid, details=d, previous_value=p, new_value=nv,
        )  # fmt: skip
        lat[i] = perf_ns() - t0
        if i % 5_000 == 0:
            peak = max(peak, rss_bytes())
    seconds = time.perf_counter() - started
    end = rss_bytes()
    peak = max(peak, end)
    stats = audit.stats()
    t0 = perf_ns()
    audit.close(timeout=1.0)
    close_s = (perf_ns() - t0) / 1e9
    calls = Latency.of(lat)
    print(
        json.dumps(
            {
                "base": base,
                "end": end,
                "peak": peak,
                "seconds": seconds,
                "queue": stats.queue_depth,
                "spooled": stats.spooled,
                "written": stats.written,
                "dropped": sum(stats.dropped.values()),
                "spooled_after_close": audit.stats().spooled,
                "close_s": close_s,
                "p50": calls.p50,
                "p99": calls.p99,
                "max": calls.max,
            }
        ),
        flush=True,
    )


def bench_memory(db: Databases, scale: Scale, tmp: Path, res: Results) -> None:
    n = scale.overload_events
    section(f"5. Memory ceiling: {n:,} events as fast as possible while the database hangs")
    url = db.clone("memory")
    spool = tmp / "memory"
    with proxy_for(url) as proxy:
        proxy.hang()
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--memory-child",
            json.dumps(
                {"url": via_proxy(url, proxy), "spool": str(spool), "n": n,
                 "workspaces": db.workspace_ids}
            ),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        out(f"   child failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        res.add("5 memory growth", "<= 64 MiB", "child failed", False)
        return
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    mib = 1024 * 1024
    growth = (r["peak"] - r["base"]) / mib
    in_flight = n - r["queue"] - r["spooled"] - r["written"]
    out(
        f"   RSS before {r['base'] / mib:.1f} MiB, peak {r['peak'] / mib:.1f} MiB, end "
        f"{r['end'] / mib:.1f} MiB: growth {growth:.1f} MiB"
    )
    out(
        f"   {n:,} calls in {r['seconds']:.2f} s: {r['queue']:,} in the queue, {r['spooled']:,} "
        f"spilled to the spool, {in_flight:,} in the stuck batch, {r['dropped']:,} dropped"
    )
    out(
        f"   calls p50 {fmt_ns(r['p50'])} p99 {fmt_ns(r['p99'])} max {fmt_ns(r['max'])}; "
        f"close(timeout=1) {r['close_s']:.3f} s, spooled then {r['spooled_after_close']:,}"
    )
    res.add(
        "5 memory under overload",
        "<= 64 MiB, 0 dropped",
        f"{growth:.1f} MiB; queue {r['queue']:,} / spool {r['spooled']:,}",
        growth <= 64 and r["dropped"] == 0,
    )


# ---- section 6: replay rate --------------------------------------------------------------


def bench_replay(db: Databases, pool: list[Event], scale: Scale, tmp: Path, res: Results) -> None:
    n = scale.replay_events
    section(f"6. Replay: {n:,} events spooled while the database refused, then replayed")
    url = db.clone("replay")
    spool = tmp / "replay"
    # The live writer on the same events, measured just before: the replay's yardstick.
    live_url = db.clone("replay_live")
    live = library_throughput(live_url, pool, n, tmp / "replay-live", queue_size=n + 1).rate
    # The database refuses connections while the events are logged, then takes them again:
    # both loggers use the direct URL (a spool segment replays only into the database it
    # names), with no proxy of this process forwarding the replay's bytes.
    name = make_url(url).database
    db.admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    audit = AuditLogger(url, spool_dir=spool)
    timed_calls(audit.log_audit_event, pool, n)
    audit.close(timeout=1.0)
    # close() returns at its timeout while the writer may still be spooling its last
    # batches; segments it still holds are locked, and a flush() elsewhere rightly skips
    # them, so the replay below would time only part of the work.
    wait_for_writer(audit)
    spooled = audit.stats().spooled
    spool_mib = sum(f.stat().st_size for f in spool.glob("*.seg")) / (1024 * 1024)
    db.admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    started = time.perf_counter()
    with AuditLogger(url, spool_dir=spool) as replayer:
        ok = replayer.flush(300)
        seconds = time.perf_counter() - started
        replayed = replayer.stats().replayed
        at_flush = count_rows(url)
    total, distinct = sql_one(url, "SELECT count(*), count(DISTINCT id) FROM audit_logs")
    rate = at_flush / seconds
    out(f"   spooled {spooled:,} events ({spool_mib:.1f} MiB on disk)")
    out(
        f"   new AuditLogger on the spool until flush() returned {ok}: {seconds:.2f} s, "
        f"{fmt_rate(rate)}; replayed {replayed:,}; rows when flush() returned {at_flush:,}, "
        f"after close {total:,} ({distinct:,} distinct)"
    )
    out(f"   the live writer on the same {n:,} events just before: {fmt_rate(live)}")
    res.add(
        "6 replay rate",
        ">= 90% of live, once",
        f"{fmt_rate(rate)} = {rate / live:.0%} of the live writer ({fmt_rate(live)})",
        total == distinct == at_flush == n and ok and rate >= 0.9 * live,
    )


def wait_for_writer(audit: AuditLogger, timeout: float = 60.0) -> None:
    """After close(): let a writer that outlived the timeout finish, so runs do not overlap."""
    thread = audit._writer._thread
    if thread is not None:
        thread.join(timeout)


# ---- section 8: event shapes, the chained-row ceiling, where the writer's time goes --------


def bench_shapes(db: Databases, pool: list[Event], scale: Scale, tmp: Path, res: Results) -> None:
    import writer_stages  # bench/writer_stages.py, beside this file

    n = scale.throughput_events
    section(f"8. Writer on two event shapes vs raw COPY and the chained-row ceiling: {n:,} events")
    out("   bench: this benchmark's events; settings: settings changes with nested JSON values.")
    out("   ceiling: binary COPY of the complete chained rows the writer stores (canonical form,")
    out("   salts, hashes, chain index, triggers), built before the clock starts, 10,000 a commit.")
    url = db.clone("shapes")
    shapes: dict[str, Sequence[Event]] = {
        "bench": pool,
        "settings": writer_stages.settings_pool(db.workspace_ids),
    }
    found = writer_stages.compare_shapes(url, shapes, n, tmp, out, reps=scale.reps)
    writer_stages.print_profile(url, shapes, out)
    for name, rates in found.items():
        ratio = rates["library"] / rates["raw"]
        res.add(
            f"8 writer vs raw, {name}",
            ">= 75% of raw",
            f"{ratio:.0%} ({fmt_rate(rates['library'])} vs {fmt_rate(rates['raw'])}); ceiling "
            f"{rates['ceiling'] / rates['raw']:.0%} of raw",
            ratio >= 0.75,
        )


# ---- main --------------------------------------------------------------------------------


def summary(res: Results) -> None:
    section("Summary")
    w1 = max(len(r[0]) for r in res.rows)
    w2 = max(len(r[1]) for r in res.rows)
    out(f"   {'what':<{w1}}  {'goal':<{w2}}  {'result':<6}  measured")
    for name, goal, measured, ok in res.rows:
        mark = "info" if ok is None else ("PASS" if ok else "FAIL")
        out(f"   {name:<{w1}}  {goal:<{w2}}  {mark:<6}  {measured}")
    failed = [r[0] for r in res.rows if r[3] is False]
    out()
    out("Goals missed: " + ", ".join(failed) if failed else "All goals met.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller counts, one repetition (~30 s)"
    )
    parser.add_argument(
        "--only", help="comma-separated sections to run, e.g. 1,3 (sections: 1 2 2b 3 4 5 6 8)"
    )
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        spec = json.loads(args.memory_child)
        with quiet_library():
            memory_child(spec["url"], spec["spool"], spec["n"], spec["workspaces"])
        return 0

    scale = QUICK if args.quick else FULL
    server = os.environ.get(ENV_URL, DEFAULT_SERVER)
    started = time.perf_counter()
    out(
        f"auditledger benchmark ({'quick' if args.quick else 'full'}), Python "
        f"{sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    db = Databases(server)
    res = Results()
    tmp = Path(tempfile.mkdtemp(prefix="auditledger-bench-"))
    try:
        with psycopg.connect(conninfo_for(server), autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()
        db.setup()
        pool = make_pool(db.workspace_ids)
        json_bytes, other_bytes = value_bytes(pool)
        out(
            f"PostgreSQL {version[0] if version else '?'}; run {RUN_ID}; events carry "
            f"{json_bytes:.0f} bytes of JSON values + {other_bytes:.0f} bytes of user id, IP and "
            f"user agent on average ({POOL_SIZE} distinct events, cycled)"
        )
        sections: dict[str, Callable[[], None]] = {
            "1": lambda: bench_caller(db, pool, scale, tmp, res),
            "2": lambda: bench_throughput(db, pool, scale, tmp, res),
            "2b": lambda: bench_sqlite(db.workspace_ids, pool, scale, tmp, res),
            "3": lambda: bench_unreachable(db, pool, scale, tmp, res),
            "4": lambda: bench_cut(db, pool, scale, tmp, res),
            "5": lambda: bench_memory(db, scale, tmp, res),
            "6": lambda: bench_replay(db, pool, scale, tmp, res),
            "8": lambda: bench_shapes(db, pool, scale, tmp, res),
        }
        chosen = args.only.split(",") if args.only else list(sections)
        with quiet_library():
            for key in chosen:
                sections[key]()
    finally:
        db.drop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    summary(res)
    out(f"Total time {time.perf_counter() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
