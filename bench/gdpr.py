#!/usr/bin/env python3
"""GDPR and retention figures on PostgreSQL, each beside its baseline from the same run.

    .venv/bin/python bench/gdpr.py            # 1,000,000 rows (a few minutes)
    .venv/bin/python bench/gdpr.py --rows 200000

1. subject export: one user's 1,000 events in a log of ``--rows`` rows, without and with the
   opt-in subject index (``auditledger gdpr index``; goal <= 50 ms), and what the index costs
   the writer (chained batch writes, without and with it);
2. erasure of that user (informative);
3. retention: the whole expired workspace deleted while an application keeps logging
   (goal >= 50,000 events/s), the caller's p99 and the writer's throughput beside their values
   with no deletion running.

It reports; it is not a test. PostgreSQL comes from AUDITLEDGER_BENCH_POSTGRES_URL (default:
the local server as postgres); the run's database is dropped at the end, even on error.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import psycopg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from auditledger import AuditLogger, AuditReader  # noqa: E402
from auditledger._chain.checkpoints import generate_keys  # noqa: E402
from auditledger._db.migrate import upgrade  # noqa: E402
from auditledger._gdpr.erase import erase_subject  # noqa: E402
from auditledger._gdpr.index import create_subject_index  # noqa: E402
from auditledger._gdpr.retention import apply_retention  # noqa: E402
from auditledger._ids import uuid7_batch  # noqa: E402
from auditledger._read.subject import subject_events  # noqa: E402
from auditledger._sinks.postgres import PostgresSink  # noqa: E402

SERVER = os.environ.get(
    "AUDITLEDGER_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SUBJECT = "U0BENCHSUBJ"
KEY = b"bench-subject-key-" * 2


def _db_url(name: str) -> str:
    return make_url(SERVER).set(database=name).render_as_string(hide_password=False)


def _admin(sql: str) -> None:
    with psycopg.connect(_db_url("postgres"), autocommit=True) as conn:
        conn.execute(sql)


def fill(url: str, rows: int, old: datetime) -> tuple[uuid.UUID, uuid.UUID]:
    """``rows`` events: all but the newest in one expired workspace, 1,000 of them the subject's
    (as actor, as resource, or mentioned), written through the library's sink."""
    expired, live = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(url, autocommit=True) as conn:
        for ws, team in ((expired, "TEXPIRED"), (live, "TLIVE")):
            conn.execute("INSERT INTO workspaces (id, team_id) VALUES (%s, %s)", (ws, team))
    sink = PostgresSink(url.replace("postgresql+psycopg", "postgresql"), connect_timeout=60)
    every = max(1, rows // 1000)
    batch = 10_000
    try:
        for start in range(0, rows, batch):
            n = min(batch, rows - start)
            ids = uuid7_batch([time.time_ns()] * n)
            out = []
            for k in range(n):
                i = start + k
                mine = i % every == 0
                user = SUBJECT if mine and i % 3 == 0 else f"U{i % 5000:07d}"
                target = SUBJECT if mine and i % 3 == 1 else f"C{i % 900:05d}"
                details = {"i": i, "channel": "C0BENCH", "note": "x" * 60}
                if mine and i % 3 == 2:
                    details["mention"] = f"<@{SUBJECT}>"
                out.append((
                    ids[k], user, expired, f"198.51.100.{i % 250}", "Mozilla/5.0 (bench)",
                    "admin_action", "user", target,
                    orjson.dumps(details, option=orjson.OPT_SORT_KEYS).decode(), None, None,
                    old + timedelta(microseconds=i), None,
                ))  # fmt: skip
            sink.write(out, [], replay=False)
    finally:
        sink.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE audit_logs")
    return expired, live


def _export_median(url: str) -> tuple[int, float]:
    with AuditReader(url) as reader:
        times = []
        for _ in range(7):
            t = time.perf_counter()
            with reader.engine.connect() as conn:
                found = sum(1 for _ in subject_events(conn, SUBJECT))
            times.append(time.perf_counter() - t)
    return found, statistics.median(times)


def _plan(url: str) -> str:
    from auditledger._db.engine import make_engine
    from auditledger._read.subject import SubjectMatcher, subject_query

    engine = make_engine(url)
    query = subject_query(SubjectMatcher(SUBJECT), "postgresql")
    sql = str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    engine.dispose()
    with psycopg.connect(url) as conn:
        lines = [r[0] for r in conn.execute("EXPLAIN ANALYZE " + sql, {})]
    # The scans, and the server's own time: the rest of the query's time is Python's.
    keep = ("Scan", "Execution Time")
    return " / ".join(line.strip() for line in lines if any(k in line for k in keep))


def _sink_rate(url: str, workspace: uuid.UUID, events: int = 20_000) -> float:
    """Chained batch writes of ``events`` events (1,000 a batch), events/s."""
    sink = PostgresSink(url, connect_timeout=60)
    try:
        t = time.perf_counter()
        for _ in range(0, events, 1000):
            ids = uuid7_batch([time.time_ns()] * 1000)
            now = datetime.now(UTC)
            # Text of varied trigrams, as real values are (a repeated letter would have one).
            rows = [
                (event_id, f"U{k:07d}", workspace, "198.51.100.7", "Mozilla/5.0 (bench)",
                 "admin_action", "user", f"C{k:05d}", _details(k), None, None, now, None)
                for k, event_id in enumerate(ids)
            ]  # fmt: skip
            sink.write(rows, [], replay=False)
        return events / (time.perf_counter() - t)
    finally:
        sink.close()


def _details(k: int) -> str:
    note = {"channel": f"C{k % 900:05d}", "note": os.urandom(24).hex(), "to": f"<@U{k:07d}>"}
    return orjson.dumps(note, option=orjson.OPT_SORT_KEYS).decode()


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def bench_export(url: str, live: uuid.UUID) -> None:
    found, scan = _export_median(url)
    print(f"1 subject export, no index: {found} events, query median {scan * 1000:.0f} ms")
    print(f"  plan: {_plan(url)}")
    write_without = _sink_rate(url, live, 50_000)
    t = time.perf_counter()
    create_subject_index(url)
    built = time.perf_counter() - t
    found, indexed = _export_median(url)
    print(
        f"  with `gdpr index` (built in {built:.0f} s): {found} events, query median"
        f" {indexed * 1000:.1f} ms (goal <= 50 ms): {_verdict(indexed <= 0.050)}"
        f"; {scan / indexed:.0f}x faster"
    )
    print(f"  plan: {_plan(url)}")
    # What an application calling AuditReader.subject_events pays, the gdpr.subject_export
    # record included: the first call on a new reader also starts the reader's recorder (its
    # writer thread and database session); later calls reuse them.
    with AuditReader(url) as reader:
        calls = []
        for _ in range(7):
            t = time.perf_counter()
            reader.subject_events(SUBJECT, subject_key=KEY)
            calls.append(time.perf_counter() - t)
    whole = statistics.median(calls[1:])
    print(
        f"  AuditReader.subject_events, gdpr.subject_export record included: median"
        f" {whole * 1000:.1f} ms (goal <= 50 ms): {_verdict(whole <= 0.050)};"
        f" first call on a new reader {calls[0] * 1000:.0f} ms (starts its recorder)"
    )
    events = 50_000
    write_with = _sink_rate(url, live, events)
    # GIN defers most of an insert's work to its pending list, merged later by VACUUM or by
    # the insert that fills it: time that merge too, or the index looks free.
    with psycopg.connect(url, autocommit=True) as conn:
        t = time.perf_counter()
        conn.execute("SELECT gin_clean_pending_list('audit_logs_subject_text_idx')")
        merge = time.perf_counter() - t
    paid = events / (events / write_with + merge)
    print(
        f"  cost: chained batch writes {write_with:,.0f} events/s with the index"
        f" ({paid:,.0f}/s counting the merge of its pending list, {merge:.1f} s) vs"
        f" {write_without:,.0f}/s without: {paid / write_without:.0%}"
    )


def bench_erase(url: str) -> None:
    t = time.perf_counter()
    result = erase_subject(url, SUBJECT, reason="bench", actor="bench", subject_key=KEY)
    print(f"2 erasure (with the index): {result.events} events in {time.perf_counter() - t:.2f} s")


class App:
    """An application logging 2,000 events/s (20 every 10 ms) to the live workspace."""

    def __init__(self, url: str, spool: Path, live: uuid.UUID) -> None:
        self.audit = AuditLogger(url, spool_dir=spool)
        self.live = live
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        log = self.audit.log_audit_event
        while not self.stop.is_set():
            for _ in range(20):
                t = time.perf_counter_ns()
                log("admin_action", user_id="U0APP", workspace_id=self.live, details={"x": 1})
                self.latencies.append((time.perf_counter_ns() - t) / 1000)
            time.sleep(0.01)

    def measure(self, seconds: float | None, during: Any = None) -> tuple[float, float, Any]:
        """(caller p99 µs, events written per second, what ``during`` returned)."""
        self.latencies.clear()
        written = self.audit.stats().written
        t = time.perf_counter()
        result = None
        if during is None:
            time.sleep(seconds or 0)  # the load runs for this long; nothing waits on it
        else:
            result = during()
        elapsed = time.perf_counter() - t
        self.audit.flush(30)
        rate = (self.audit.stats().written - written) / elapsed
        p99 = statistics.quantiles(self.latencies, n=100)[98] if self.latencies else 0.0
        return p99, rate, result


def bench_retention(url: str, live: uuid.UUID, old: datetime, tmp: Path) -> None:
    keys = tmp / "keys"
    generate_keys(keys)
    app = App(url, tmp / "spool", live)
    app.thread.start()
    try:
        base_p99, base_rate, _ = app.measure(5.0)
        cut = old + timedelta(days=1)

        def delete() -> Any:
            return apply_retention(url, signer=keys / "signing.key", before=cut)

        p99, written, result = app.measure(None, delete)
    finally:
        app.stop.set()
        app.thread.join()
        app.audit.close()
    # The deletion batches alone: the cut, the record and the plan's queries are excluded.
    seconds = _timing["delete"]
    rate = result.deleted / seconds
    print(
        f"3 retention: deleted {result.deleted:,} events in {seconds:.1f} s,"
        f" {rate:,.0f}/s (goal >= 50,000/s) while the app logged: {_verdict(rate >= 50_000)}"
    )
    print(
        f"  caller p99 {p99:.0f} µs during the deletion vs {base_p99:.0f} µs without;"
        f" writer {written:,.0f} events/s vs {base_rate:,.0f}/s (the app offers ~2,000/s)"
    )


_timing: dict[str, float] = {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    name = f"auditledger_bench_gdpr_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{name}"')
    url = _db_url(name)
    try:
        upgrade(url)
        old = datetime.now(UTC) - timedelta(days=400)
        t = time.perf_counter()
        _, live = fill(url, args.rows, old)
        print(f"log of {args.rows:,} rows written in {time.perf_counter() - t:.0f} s")
        print(f"load average before: {os.getloadavg()[0]:.1f} (2 shared cores)")
        bench_export(url, live)
        bench_erase(url)
        with tempfile.TemporaryDirectory() as tmp:
            import auditledger._gdpr.retention as retention

            original = retention._delete_prefix

            def timed(*a: Any, **k: Any) -> int:
                t0 = time.perf_counter()
                try:
                    return original(*a, **k)
                finally:
                    _timing["delete"] = _timing.get("delete", 0.0) + time.perf_counter() - t0

            retention._delete_prefix = timed
            bench_retention(url, live, old, Path(tmp))
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
