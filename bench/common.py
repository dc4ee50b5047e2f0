"""What every benchmark here shares: the databases, the usual pool of events, the measured
call loops and how figures are printed. Each benchmark is a script of its own beside this
file (``bench/run.py``, ``bench/scale_out.py``, ...), run from the repository root."""

from __future__ import annotations

import contextlib
import logging
import random
import statistics
import string
import sys
import time
import uuid
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from auditledger import AuditAction  # noqa: E402
from auditledger._db.migrate import upgrade  # noqa: E402

ENV_URL = "AUDITLEDGER_BENCH_POSTGRES_URL"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
RUN_ID = uuid.uuid4().hex[:8]
perf_ns = time.perf_counter_ns

# ---- events ------------------------------------------------------------------------------

# (action, user_id, workspace_id, ip_address, user_agent, resource, resource_id,
#  details, previous_value, new_value): arguments of one log_audit_event call.
Event = tuple[Any, str, str, str, str, str, str, dict[str, Any], dict[str, Any], dict[str, Any]]

USER_AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Slackbot 1.0 (+https://api.slack.com/robots)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Slack/4.37.94 "
    "Chrome/122.0.6261.156 Electron/29.1.4 Safari/537.36 Sonic Slack_SSB/4.37.94",
)
RESOURCES = {
    AuditAction.LOGIN: "user",
    AuditAction.LOGOUT: "user",
    AuditAction.DATA_EXPORT_REQUESTED: "user",
    AuditAction.DATA_EXPORT_COMPLETED: "user",
    AuditAction.DATA_DELETE_REQUESTED: "user",
    AuditAction.DATA_DELETE_COMPLETED: "user",
    AuditAction.SUBSCRIPTION_CREATED: "subscription",
    AuditAction.SUBSCRIPTION_CANCELLED: "subscription",
    AuditAction.SETTINGS_CHANGED: "settings",
    AuditAction.OAUTH_CONNECTED: "oauth",
    AuditAction.OAUTH_DISCONNECTED: "oauth",
    AuditAction.ADMIN_ACTION: "admin",
}
POOL_SIZE = 1_000


def _slack_id(rng: random.Random, prefix: str) -> str:
    return prefix + "".join(rng.choices(string.ascii_uppercase + string.digits, k=10))


def make_pool(workspace_ids: Sequence[str], seed: int = 7) -> list[Event]:
    """A thousand varied events of ~500 bytes of values, cycled by every measurement.

    Reusing dicts is fair: the library snapshots (serialises) them on every call anyway.
    """
    rng = random.Random(seed)
    users = [_slack_id(rng, "U0") for _ in range(200)]
    actions = list(RESOURCES)
    pool: list[Event] = []
    for _ in range(POOL_SIZE):
        action = rng.choice(actions)
        user = rng.choice(users)
        if rng.random() < 0.8:
            ip = ".".join(str(rng.randint(1, 223 if k == 0 else 254)) for k in range(4))
        else:
            ip = f"2001:db8:{rng.randint(0, 0xFFFF):x}::{rng.randint(1, 0xFFFF):x}"
        details = {
            "request_id": f"req_{rng.getrandbits(64):016x}",
            "channel_id": _slack_id(rng, "C0"),
            "source": rng.choice(["slack_command", "web_portal", "slack_shortcut", "api"]),
            "client": {"app_version": "4.37.94", "platform": rng.choice(["darwin", "win32"])},
            "reason": rng.choice(
                ["user requested via settings page", "scheduled compliance job", "admin console"]
            ),
        }
        previous = {
            "notifications": {"email": True, "digest": "daily", "mentions_only": False},
            "retention_days": rng.choice([30, 90, 365]),
            "timezone": rng.choice(["Europe/Berlin", "America/New_York", "Asia/Tokyo"]),
            "export_format": "csv",
            "plan": rng.choice(["free", "pro", "business"]),
        }
        new = dict(previous, retention_days=rng.choice([7, 180]), export_format="json")
        new["notifications"] = {"email": False, "digest": "weekly", "mentions_only": True}
        pool.append(
            (
                action,
                user,
                rng.choice(workspace_ids),
                ip,
                rng.choice(USER_AGENTS),
                RESOURCES[action],
                user
                if RESOURCES[action] == "user"
                else f"{RESOURCES[action]}-{rng.randint(1, 99)}",
                details,
                previous,
                new,
            )
        )
    return pool


# ---- measurement helpers -----------------------------------------------------------------


def pct(values: Sequence[int] | array[int], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return float(ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))])


@dataclass
class Latency:
    """Per-call latencies of one series, in nanoseconds."""

    p50: float
    p99: float
    p999: float
    max: float
    count: int

    @classmethod
    def of(cls, values: Sequence[int] | array[int]) -> Latency:
        return cls(
            pct(values, 0.5), pct(values, 0.99), pct(values, 0.999), float(max(values)), len(values)
        )

    @classmethod
    def median(cls, runs: Sequence[Latency]) -> Latency:
        return cls(
            statistics.median(r.p50 for r in runs),
            statistics.median(r.p99 for r in runs),
            statistics.median(r.p999 for r in runs),
            max(r.max for r in runs),
            sum(r.count for r in runs),
        )

    def row(self) -> str:
        return (
            f"p50 {fmt_ns(self.p50)}  p99 {fmt_ns(self.p99)}  "
            f"p99.9 {fmt_ns(self.p999)}  max {fmt_ns(self.max)}"
        )


def fmt_ns(ns: float) -> str:
    if ns != ns:  # NaN: no sample
        return "-"
    if ns < 10_000:
        return f"{ns / 1000:.2f} µs"
    if ns < 1_000_000:
        return f"{ns / 1000:.0f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e9:.2f} s"


def fmt_rate(per_s: float) -> str:
    return f"{per_s:,.0f}/s"


def out(text: str = "") -> None:
    print(text, flush=True)


def section(title: str) -> None:
    out()
    out(f"== {title}")


# ---- databases ---------------------------------------------------------------------------


def conninfo_for(url: str, database: str | None = None) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


class Databases:
    """Uniquely named databases of this run: a migrated template and clones of it."""

    def __init__(self, server_url: str) -> None:
        self.server_url = server_url
        self.created: list[str] = []
        self.template = f"auditledger_bench_{RUN_ID}_template"
        self.workspace_ids: list[str] = []

    def admin(self, sql: str) -> None:
        with psycopg.connect(conninfo_for(self.server_url), autocommit=True) as conn:
            conn.execute(sql)

    def setup(self, workspaces: int = 20) -> None:
        self.admin(f'CREATE DATABASE "{self.template}"')
        self.created.append(self.template)
        url = conninfo_for(self.server_url, self.template)
        upgrade(url)
        rng = random.Random(3)
        rows = [
            (uuid.uuid4(), _slack_id(rng, "T0"), None, f"Workspace {i}") for i in range(workspaces)
        ]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.cursor().executemany(
                "INSERT INTO workspaces (id, team_id, enterprise_id, name) VALUES (%s, %s, %s, %s)",
                rows,
            )
        self.workspace_ids = [str(r[0]) for r in rows]

    def clone(self, suffix: str) -> str:
        name = f"auditledger_bench_{RUN_ID}_{suffix}"
        self.admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self.created.append(name)
        return conninfo_for(self.server_url, name)

    def drop_all(self) -> None:
        for name in reversed(self.created):
            try:
                self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg.Error as exc:
                out(f"warning: could not drop database {name}: {type(exc).__name__}")
        self.created = []


def sql_one(url: str, sql: str) -> tuple[Any, ...]:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return tuple(row)


def reset_table(url: str) -> None:
    """An empty audit_logs with its indexes, and no checkpoint pending from the last run."""
    with psycopg.connect(url, autocommit=True) as conn:
        # The audit tables are append-only (their triggers refuse TRUNCATE); the benchmark owns
        # this database and empties it as a superuser can, with triggers off for this session.
        conn.execute("SET session_replication_role = replica")
        conn.execute("TRUNCATE audit_logs, audit_quarantine, audit_checkpoints")
        conn.execute("RESET session_replication_role")
        # Both sides of a comparison start without a checkpoint debt from the previous one.
        with contextlib.suppress(psycopg.Error):  # CHECKPOINT needs a superuser
            conn.execute("CHECKPOINT")


# ---- the measured loops ------------------------------------------------------------------

LogFn = Callable[..., None]


def timed_calls(log: LogFn, pool: Sequence[Event], n: int, start: int = 0) -> array[int]:
    """Call ``log`` n times with events from the pool; the latency of each call in ns."""
    lat = array("q", bytes(8 * n))
    size = len(pool)
    for i in range(n):
        a, u, w, ip, ua, r, rid, d, p, nv = pool[(start + i) % size]
        t0 = perf_ns()
        log(
            a,
            user_id=u,
            workspace_id=w,
            ip_address=ip,
            user_agent=ua,
            resource=r,
            resource_id=rid,
            details=d,
            previous_value=p,
            new_value=nv,
        )
        lat[i] = perf_ns() - t0
    return lat


def paced_calls(log: LogFn, pool: Sequence[Event], n: int, burst: int, pause: float) -> array[int]:
    """Like timed_calls, in bursts with a pause between them: a busy service, not a flood."""
    lat = array("q", bytes(8 * n))
    done = 0
    while done < n:
        k = min(burst, n - done)
        lat[done : done + k] = timed_calls(log, pool, k, start=done)
        done += k
        time.sleep(pause)
    return lat


def noop_log(action: Any, **kwargs: Any) -> None:
    """Same call shape, no work: what the measuring loop itself costs per call."""


def count_rows(url: str) -> int:
    return int(sql_one(url, "SELECT count(*) FROM audit_logs")[0])


@contextlib.contextmanager
def quiet_library() -> Iterator[None]:
    """The outages below are deliberate; their warnings would bury the figures."""
    logger = logging.getLogger("auditledger")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
