"""Small helpers shared by the tests (not fixtures)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from auditledger import AuditEvent, AuditStore
from auditledger._chain.v2 import erased_salt, parse
from auditledger._db.engine import make_engine
from auditledger._db.urls import normalise_url, spool_fingerprint
from auditledger._write.capture import capture_event
from auditledger._write.redact import Redactor
from auditledger._write.scrub import Scrubber
from auditledger._write.spool import SegmentWriter, encode_event
from auditledger._write.spool_frames import EVENT
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


def fingerprint(url: str) -> str:
    """The database identity a logger for ``url`` writes into its spool segments."""
    return spool_fingerprint(normalise_url(url))


def spool_segment(
    directory: Path,
    events: list[tuple[uuid.UUID, str]],
    then: list[bytes] | None = None,
    *,
    url: str,
) -> Path:
    """Write a sealed segment the way a writer whose batch outcome was unknown leaves it
    (and, after the events, the raw records ``then``)."""
    writer = SegmentWriter(directory, "o", fingerprint(url))
    writer.append(EVENT, payloads(events) + (then or []))
    path = writer.path
    assert path is not None
    writer.seal()
    return path


def payloads(events: list[tuple[uuid.UUID, str]]) -> list[bytes]:
    scrub = Scrubber(Redactor()).scrub
    return [
        encode_event(
            str(event_id),
            capture_event(
                time.time_ns(),
                "login",
                user,
                None,
                "192.0.2.1",
                None,
                "user",
                user,
                {"replayed": True},
                None,
                None,
            ),
            scrub,
        )
        for event_id, user in events
    ]


def add_rule(url: str, postgres_sql: str, sqlite_sql: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text(postgres_sql if engine.dialect.name == "postgresql" else sqlite_sql))
    engine.dispose()


def run_sql(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """One statement as the database's owner (``%s`` placeholders on both databases)."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            return conn.execute(sql.replace("%s", "?"), args).fetchall()
        finally:
            conn.close()
    with psycopg.connect(url, autocommit=True) as pg:
        cur = pg.execute(sql, args)
        return cur.fetchall() if cur.description else []


def row_id(url: str, value: uuid.UUID) -> str:
    """An id as the database stores it (SQLite: 32 hex digits)."""
    return value.hex if url.startswith("sqlite") else str(value)


def erase_by_hand(url: str, event_id: uuid.UUID, *columns: str) -> None:
    """Null columns of a version 2 event and zero their salt slots, as erasure does (the
    trigger lets the owner do it): only a covering gdpr.erasure event tells this from
    tampering."""
    key = row_id(url, event_id)
    canonical, salt = run_sql(url, "SELECT canonical, pii_salt FROM audit_logs WHERE id = %s", key)[
        0
    ]
    hashed = parse(bytes(canonical))
    assert hashed is not None
    zeroed = erased_salt(hashed, bytes(salt), frozenset(columns))
    sets = ", ".join(f"{c} = NULL" for c in columns)
    run_sql(url, f"UPDATE audit_logs SET {sets}, pii_salt = %s WHERE id = %s", zeroed, key)
