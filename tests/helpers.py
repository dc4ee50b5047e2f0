"""Small helpers shared by the tests (not fixtures)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from auditledger import AuditEvent, AuditStore
from auditledger._db.engine import make_engine
from tests.tcp_proxy import TcpProxy


def via(proxy: TcpProxy, url: str) -> str:
    """The same database URL, reached through the proxy."""
    parsed = make_url(url).set(host="127.0.0.1", port=proxy.port)
    return parsed.render_as_string(hide_password=False)


def stored(url: str, **filters: object) -> list[AuditEvent]:
    with AuditStore(url) as store:
        return store.events(limit=100_000, **filters)  # type: ignore[arg-type]


def by_action(events: list[AuditEvent]) -> dict[str, list[AuditEvent]]:
    out: dict[str, list[AuditEvent]] = {}
    for e in events:
        out.setdefault(e.action, []).append(e)
    return out


def cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``auditledger ARGS`` in a child process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "auditledger.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )


def add_rule(url: str, postgres_sql: str, sqlite_sql: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text(postgres_sql if engine.dialect.name == "postgresql" else sqlite_sql))
    engine.dispose()
