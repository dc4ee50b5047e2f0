#!/usr/bin/env python3
"""The writer against its limits, on two event shapes, and where its time goes.

    .venv/bin/python bench/writer_stages.py [--quick]

For each shape (the bench's usual events, and settings changes with nested JSON in
``previous_value``/``new_value``), side by side in one run:

- raw binary COPY of the seed's columns (orjson + psycopg, 10,000 rows per transaction);
- the chained-row ceiling: binary COPY of the complete chained rows the writer produces
  (canonical form, salts, hashes, unique chain index and triggers in place), built before the
  clock starts, 10,000 rows per transaction;
- the library, first call until ``flush()`` returns;
- a per-stage profile of one batch of 2,000 events: capture (the caller's share), ids,
  redaction, validation, canonical form, commitments, links, COPY formatting, database.

``bench/run.py`` prints the same as its section 8.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import statistics
import string
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg._copy_base import BinaryFormatter
from psycopg.adapt import Dumper, Transformer
from psycopg.pq import Format
from psycopg.types.string import BytesBinaryDumper

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from auditledger import AuditLogger  # noqa: E402
from auditledger._chain.canonical import CHAIN_COLUMNS, seal  # noqa: E402
from auditledger._chain.links import link_batch  # noqa: E402
from auditledger._chain.v2 import ERASABLE, TAGS  # noqa: E402
from auditledger._db.schema import AUDIT_LOG_COLUMNS  # noqa: E402
from auditledger._ids import uuid7_batch  # noqa: E402
from auditledger._sinks.postgres import (  # noqa: E402
    _COPY_TYPES,
    PostgresSink,
    register_copy_dumpers,
)
from auditledger._write.capture import capture_event  # noqa: E402
from auditledger._write.prepare import Limits, Preparer  # noqa: E402

# (action, user_id, workspace_id, ip_address, user_agent, resource, resource_id,
#  details, previous_value, new_value): arguments of one log_audit_event call.
Event = tuple[Any, ...]
Out = Callable[[str], None]

SEED_COLUMNS = ", ".join(AUDIT_LOG_COLUMNS)
SEED_COPY = f"COPY audit_logs ({SEED_COLUMNS}) FROM STDIN (FORMAT BINARY)"
SEED_TYPES = [
    "uuid", "text", "uuid", "text", "text", "text", "text", "text",
    "jsonb", "jsonb", "jsonb", "timestamptz", "jsonb",
]  # fmt: skip
CHAINED_COPY = (
    f"COPY audit_logs ({', '.join(AUDIT_LOG_COLUMNS + CHAIN_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
)
CHAINED_TYPES = [*SEED_TYPES, "uuid", "int8", "bytea", "bytea", "bytea"]
CHUNK = 10_000
BATCH = 2_000


class _Raw:
    """Marker type: JSON already serialised (bytes), sent as jsonb's binary format."""


class _RawDumper(Dumper):
    format = Format.BINARY

    def dump(self, obj: Any) -> bytes:
        data = obj if isinstance(obj, bytes) else obj.encode()
        return b"\x01" + data


def _connect(url: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(url, autocommit=True)
    info = psycopg.types.TypeInfo.fetch(conn, "jsonb")
    assert info is not None
    conn.adapters.register_dumper(_Raw, type("D", (_RawDumper,), {"oid": info.oid}))
    conn.adapters.register_dumper(bytes, BytesBinaryDumper)  # as the writer's COPY (bytea)
    return conn


@dataclass
class Cost:
    """One run: wall seconds, and CPU seconds of this process and of its server backend."""

    seconds: float
    client_cpu: float
    server_cpu: float

    def per_event(self, n: int) -> tuple[float, float]:
        """(client, server) CPU microseconds per event."""
        return self.client_cpu * 1e6 / n, self.server_cpu * 1e6 / n


_TICK = os.sysconf("SC_CLK_TCK")


def backend_cpu(pid: int) -> float:
    """CPU seconds a PostgreSQL backend has used (on this machine; NaN when it is elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def writer_backend(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'auditledger-writer'"
        ).fetchone()
    return int(row[0]) if row else -1


def settings_pool(workspace_ids: Sequence[str], size: int = 1_000, seed: int = 11) -> list[Event]:
    """Settings changes whose previous and new values are nested JSON (~300 bytes each)."""
    rng = random.Random(seed)

    def sid(prefix: str) -> str:
        return prefix + "".join(rng.choices(string.ascii_uppercase + string.digits, k=10))

    users = [sid("U0") for _ in range(200)]
    names = ["notifications", "channel_routing", "retention_policy", "sso_settings", "digest"]
    pool: list[Event] = []
    for _ in range(size):
        channels = [sid("C0") for _ in range(rng.randint(2, 4))]
        previous = {
            "routing": {c: {"level": rng.choice(["all", "mentions", "none"])} for c in channels},
            "schedule": {"days": ["mon", "tue", "wed", "thu", "fri"], "from": 9, "to": 18},
            "escalation": [{"after_minutes": m, "notify": sid("U0")} for m in (5, 30)],
            "version": rng.randint(1, 500),
        }
        new = orjson.loads(orjson.dumps(previous))
        new["schedule"]["to"] = rng.choice([17, 19, 20])
        new["escalation"].append({"after_minutes": 60, "notify": sid("U0")})
        new["version"] += 1
        user = rng.choice(users)
        pool.append(
            ("settings_changed", user, rng.choice(workspace_ids), None, None, "settings",
             rng.choice(names), None, previous, new)
        )  # fmt: skip
    return pool


def _json(value: Any) -> _Raw | None:
    return None if value is None else orjson.dumps(value)  # type: ignore[return-value]


def raw_copy(url: str, pool: Sequence[Event], n: int) -> Cost:
    """The seed's columns of n events by binary COPY, CHUNK rows a transaction."""
    ws = {w: uuid.UUID(w) for w in {ev[2] for ev in pool}}
    size = len(pool)
    started, cpu = time.perf_counter(), time.process_time()
    with _connect(url) as conn:
        server = backend_cpu(conn.info.backend_pid)
        for begin in range(0, n, CHUNK):
            count = min(CHUNK, n - begin)
            ids = uuid7_batch([time.time_ns()] * count)
            with conn.transaction(), conn.cursor().copy(SEED_COPY) as copy:
                copy.set_types(SEED_TYPES)
                for k in range(count):
                    a, u, w, ip, ua, r, rid, d, p, nv = pool[(begin + k) % size]
                    copy.write_row(
                        (ids[k], u, ws[w], ip, ua, str(a), r, rid,
                         _json(d), _json(p), _json(nv), datetime.now(UTC), None)
                    )  # fmt: skip
        server = backend_cpu(conn.info.backend_pid) - server
    return Cost(time.perf_counter() - started, time.process_time() - cpu, server)


def chained_rows(pool: Sequence[Event], n: int) -> list[tuple[Any, ...]]:
    """The complete rows the writer stores for n events (as if from an empty table)."""
    preparer = Preparer(Limits())
    size = len(pool)
    rows: list[tuple[Any, ...]] = []
    heads: dict[uuid.UUID, Any] = {}
    for begin in range(0, n, BATCH):
        count = min(BATCH, n - begin)
        captured = [capture_event(time.time_ns(), *pool[(begin + k) % size]) for k in range(count)]
        prepared, _ = preparer.prepare(uuid7_batch([c[0] for c in captured]), captured)
        sealed = seal(prepared)
        rows.extend(
            row + linked for row, linked in zip(prepared, link_batch(sealed, heads), strict=True)
        )
    return rows


def ceiling_copy(url: str, rows: Sequence[tuple[Any, ...]]) -> Cost:
    """The complete chained rows by binary COPY, CHUNK rows a transaction."""
    started, cpu = time.perf_counter(), time.process_time()
    with _connect(url) as conn:
        server = backend_cpu(conn.info.backend_pid)
        for begin in range(0, len(rows), CHUNK):
            with conn.transaction(), conn.cursor().copy(CHAINED_COPY) as copy:
                copy.set_types(CHAINED_TYPES)
                for row in rows[begin : begin + CHUNK]:
                    copy.write_row(row)
        server = backend_cpu(conn.info.backend_pid) - server
    return Cost(time.perf_counter() - started, time.process_time() - cpu, server)


def library_run(url: str, pool: Sequence[Event], n: int, spool: Path, **options: Any) -> Cost:
    """First call until flush() returns (every event in the database)."""
    audit = AuditLogger(url, spool_dir=spool, queue_size=n + 1, **options)
    log = audit.log_audit_event
    size = len(pool)
    try:
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(n):
            a, u, w, ip, ua, r, rid, d, p, nv = pool[i % size]
            log(a, user_id=u, workspace_id=w, ip_address=ip, user_agent=ua, resource=r,
                resource_id=rid, details=d, previous_value=p, new_value=nv)  # fmt: skip
        if not audit.flush(300):
            raise RuntimeError("flush() timed out")
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        # The writer's backend started with its first batch: all its CPU is this run's.
        return Cost(seconds, cpu, backend_cpu(writer_backend(url)))
    finally:
        audit.close(10)


def reset(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("TRUNCATE audit_logs, audit_quarantine, audit_checkpoints")
        conn.execute("RESET session_replication_role")
        with contextlib.suppress(psycopg.Error):
            conn.execute("CHECKPOINT")


# ---- per-stage profile -------------------------------------------------------------------


def stage_profile(url: str, pool: Sequence[Event], reps: int = 5) -> dict[str, float]:
    """Microseconds per event of each stage of one batch (median of ``reps`` batches)."""
    sink = PostgresSink(url, connect_timeout=10)
    preparer = Preparer(Limits())
    conn = _connect(url)
    samples: dict[str, list[float]] = {}
    try:
        for rep in range(reps):
            events = [pool[(rep * BATCH + k) % len(pool)] for k in range(BATCH)]
            t: dict[str, float] = {}
            clock = time.perf_counter
            t0 = clock()
            captured = [capture_event(time.time_ns(), *ev) for ev in events]
            t["capture (caller's thread)"] = clock() - t0
            t0 = clock()
            ids = uuid7_batch([c[0] for c in captured])
            t["ids"] = clock() - t0
            t0 = clock()
            preparer.scrubber.scrub_all(captured)
            t["redaction"] = clock() - t0
            t0 = clock()
            rows, _ = preparer.prepare(ids, captured)
            t["validation"] = clock() - t0
            t0 = clock()
            sealed = seal(rows)
            sealing = clock() - t0
            t["commitments"] = _commitment_seconds(rows)
            t["canonical form"] = max(0.0, sealing - t["commitments"])
            t0 = clock()
            linked = link_batch(sealed, {})
            t["links"] = clock() - t0
            t["COPY formatting"] = _format_seconds(conn, rows, linked)
            reset(url)
            t0 = clock()
            sink.write(rows, [], replay=False)  # resolves, seals, links and formats again
            spent = clock() - t0
            own = t["canonical form"] + t["commitments"] + t["links"] + t["COPY formatting"]
            t["database (write minus its own CPU)"] = max(0.0, spent - own)
            for name, seconds in t.items():
                samples.setdefault(name, []).append(seconds * 1e6 / BATCH)
    finally:
        sink.close()
        conn.close()
        reset(url)
    return {name: statistics.median(values) for name, values in samples.items()}


def _commitment_seconds(rows: Sequence[tuple[Any, ...]]) -> float:
    """The commitments alone: one SHA-256 over salt, tag and value per present value."""
    sha = hashlib.sha256
    salt = bytes(16)
    tags = [(index, TAGS[name]) for name, _, index in ERASABLE]
    started = time.perf_counter()
    for row in rows:
        for index, tag in tags:
            value = row[index]
            if value is not None:
                sha(salt + tag + value.encode()).hexdigest()
    return time.perf_counter() - started


def _format_seconds(
    conn: psycopg.Connection[Any], rows: Sequence[Any], linked: Sequence[Any]
) -> float:
    """psycopg's binary COPY formatting of the batch (its own formatter), with nothing sent."""
    tx = Transformer(conn)
    registry = conn.adapters.types
    oids = [registry.get_oid(name) for name in _COPY_TYPES]
    info = psycopg.types.TypeInfo.fetch(conn, "jsonb")
    assert info is not None
    register_copy_dumpers(tx.adapters, info.oid)
    tx.set_dumper_types(oids, Format.BINARY)
    formatter = BinaryFormatter(tx)
    sink = io.BytesIO()
    started = time.perf_counter()
    for row, chained in zip(rows, linked, strict=True):
        sink.write(formatter.write_row(row + chained))
    sink.write(formatter.end())
    return time.perf_counter() - started


# ---- the report --------------------------------------------------------------------------


def compare_shapes(
    url: str, shapes: dict[str, Sequence[Event]], n: int, tmp: Path, out: Out, reps: int = 1
) -> dict[str, dict[str, float]]:
    """Raw COPY, the chained-row ceiling and the library per shape, side by side (medians of
    ``reps`` rounds, each measuring the three one after the other), and the CPU each spent
    per event, in this process and in its PostgreSQL backend: on a loaded machine the rates
    move with the other work, the CPU per event much less."""
    results: dict[str, dict[str, float]] = {}
    for name, pool in shapes.items():
        rows = chained_rows(pool, n)
        runs: dict[str, list[Cost]] = {"raw": [], "ceiling": [], "library": []}
        for rep in range(reps):
            reset(url)
            runs["raw"].append(raw_copy(url, pool, n))
            reset(url)
            runs["ceiling"].append(ceiling_copy(url, rows))
            reset(url)
            runs["library"].append(library_run(url, pool, n, tmp / f"st-{name}-{rep}"))
        reset(url)
        found: dict[str, float] = {}
        for kind, costs in runs.items():
            found[kind] = statistics.median(n / c.seconds for c in costs)
            found[f"{kind}_client"] = statistics.median(c.per_event(n)[0] for c in costs)
            found[f"{kind}_server"] = statistics.median(c.per_event(n)[1] for c in costs)
        results[name] = found
        raw, ceiling, lib = found["raw"], found["ceiling"], found["library"]
        out(
            f"   {name:<9} raw COPY {raw:>7,.0f}/s   chained-row ceiling {ceiling:>7,.0f}/s "
            f"({ceiling / raw:.0%} of raw)   library {lib:>7,.0f}/s = {lib / raw:.0%} of raw, "
            f"{lib / ceiling:.0%} of the ceiling"
        )
        cpu = {k: found[f"{k}_client"] + found[f"{k}_server"] for k in runs}
        out(
            "   "
            + " " * 10
            + "CPU µs/event (client + server): "
            + ", ".join(
                f"{k} {cpu[k]:.1f} ({found[f'{k}_client']:.1f} + {found[f'{k}_server']:.1f})"
                for k in runs
            )
            + f"; raw/library {cpu['raw'] / cpu['library']:.0%}"
        )
    return results


def print_profile(url: str, shapes: dict[str, Sequence[Event]], out: Out) -> None:
    profiles = {name: stage_profile(url, pool) for name, pool in shapes.items()}
    names = list(next(iter(profiles.values())))
    out(f"   per-stage profile of one batch of {BATCH:,} events, µs per event (median of 5):")
    out("   " + f"{'stage':<38}" + "".join(f"{s:>12}" for s in profiles))
    for stage in names:
        out("   " + f"{stage:<38}" + "".join(f"{p[stage]:>12.2f}" for p in profiles.values()))
    writer = [n for n in names if not n.startswith(("capture", "database"))]
    out(
        "   "
        + f"{'writer CPU (all but capture, database)':<38}"
        + "".join(f"{sum(p[s] for s in writer):>12.2f}" for p in profiles.values())
    )


def main() -> int:
    import argparse
    import shutil
    import tempfile

    import common  # bench/common.py: the databases and the usual event pool

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--reps", type=int, default=None)
    args = parser.parse_args()
    n = args.events or (20_000 if args.quick else 50_000)
    db = common.Databases(os.environ.get(common.ENV_URL, common.DEFAULT_SERVER))
    tmp = Path(tempfile.mkdtemp(prefix="auditledger-stages-"))
    try:
        db.setup()
        url = db.clone("stages")
        shapes: dict[str, Sequence[Event]] = {
            "bench": common.make_pool(db.workspace_ids),
            "settings": settings_pool(db.workspace_ids),
        }
        print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {n:,} events")
        compare_shapes(url, shapes, n, tmp, print, reps=args.reps or (1 if args.quick else 3))
        print_profile(url, shapes, print)
    finally:
        db.drop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
