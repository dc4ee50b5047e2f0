"""Database outages in the middle of a steady stream: every event lands exactly once."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from auditledger import AuditLogger
from tests.helpers import via
from tests.tcp_proxy import TcpProxy


def counts(pg_url: str, column: str = "resource_id") -> tuple[int, int]:
    conninfo = make_url(pg_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(f"SELECT count(*), count(DISTINCT {column}) FROM audit_logs").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


class Stream:
    """Logs numbered events at a steady pace; each number must be stored exactly once."""

    def __init__(self, audit: AuditLogger) -> None:
        self.audit = audit
        self.sent = 0

    def run(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _ in range(25):
                self.sent += 1
                self.audit.log_audit_event(
                    "admin_action", user_id=f"U{self.sent % 7}", resource_id=str(self.sent),
                    details={"seq": self.sent},
                )  # fmt: skip
            time.sleep(0.002)  # paces the producer; nothing here waits for the writer


def test_hang_then_refuse_mid_stream_loses_and_duplicates_nothing(
    proxy: TcpProxy, pg_url: str, spool_dir: Path
) -> None:
    audit = AuditLogger(
        via(proxy, pg_url), spool_dir=spool_dir, write_timeout=1.0, flush_interval=0.05
    )
    stream = Stream(audit)
    stream.run(0.5)
    proxy.hang()
    stream.run(2.5)
    proxy.refuse()
    stream.run(1.0)
    proxy.restore()
    stream.run(0.5)
    assert audit.flush(60)
    stats = audit.stats()
    audit.close()
    assert counts(pg_url) == (stream.sent, stream.sent)
    assert stats.enqueued == stream.sent
    assert stats.spooled > 0
    assert stats.replayed >= stats.spooled
    assert stats.dropped == {}
    assert stats.last_error is None


def test_close_returns_within_its_timeout_when_the_database_hangs(
    proxy: TcpProxy, pg_url: str, spool_dir: Path
) -> None:
    proxy.hang()
    audit = AuditLogger(
        via(proxy, pg_url), spool_dir=spool_dir, write_timeout=30.0, queue_size=30_000
    )
    for i in range(20_000):
        audit.log_audit_event("login", user_id=str(i))
    # Structural proof that calls never wait on I/O: the writer is stuck on a connection that
    # will not answer for 30 s, yet all 20,000 calls returned and sit in memory, none spooled.
    assert audit.flush(0.5) is False  # the database hangs; the writer holds its batches
    stats = audit.stats()
    assert stats.queue_depth + stats.in_flight == 20_000
    assert stats.spooled == 0
    started = time.monotonic()
    assert audit.close(timeout=1.0) is False
    assert time.monotonic() - started < 3.0
    assert audit.stats().spooled == 20_000
    proxy.restore()
    with AuditLogger(via(proxy, pg_url), spool_dir=spool_dir) as survivor:
        assert survivor.flush(30)
    assert counts(pg_url, "user_id") == (20_000, 20_000)
