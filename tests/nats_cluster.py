"""Publishers and ingesters around one nats-server and one PostgreSQL database: what the
NATS tests share."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.helpers import cli
from tests.nats_server import NatsServer, wait_until

ROOT = Path(__file__).resolve().parent.parent


def conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def counts(url: str) -> tuple[int, int, int]:
    """(rows, distinct ids, quarantined)."""
    with psycopg.connect(conninfo(url)) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT id), (SELECT count(*) FROM audit_quarantine)"
            " FROM audit_logs"
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


class Cluster:
    """Publishers and ingesters around one nats-server and one database."""

    def __init__(self, nats: NatsServer, db_url: str, tmp: Path, keys: Path) -> None:
        self.nats = nats
        self.db_url = db_url
        self.tmp = tmp
        self.ingesters: list[subprocess.Popen[bytes]] = []
        self.public_key = keys / "signing.pub"
        self.signing_key = keys / "signing.key"

    def ingester(
        self, db_url: str | None = None, env: dict[str, str] | None = None, log: Path | None = None
    ) -> subprocess.Popen[bytes]:
        with open(log or os.devnull, "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "auditledger.cli", "ingest", "--nats-url", self.nats.url,
                 "--database-url", db_url or self.db_url, "--signing-key", str(self.signing_key),
                 "--batch-size", "200"],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, env=env,
            )  # fmt: skip
        self.ingesters.append(proc)
        return proc

    def publishers(
        self, count: int, each: int, env: dict[str, str] | None = None
    ) -> list[subprocess.Popen[bytes]]:
        return [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.nats_children",
                    "publish",
                    self.nats.url,
                    str(self.tmp / f"spool{n}"),
                    str(each),
                    f"pub{n}",
                ],
                cwd=ROOT,
                env=env,
            )
            for n in range(count)
        ]

    def wait_stored(self, expected: int, timeout: float = 60) -> None:
        wait_until(lambda: counts(self.db_url)[1] >= expected, timeout, f"{expected} rows")

    def check(self, logged: int, quarantined: int = 0) -> None:
        rows, distinct, kept = counts(self.db_url)
        assert (rows, distinct, kept) == (logged, logged, quarantined)
        # Repeats of stored events (a batch replayed after the server's restart) may still be
        # on their way through an ingester, which drops them: the stream empties, nothing waits
        # for the ack wait (30 s) to pass.
        wait_until(lambda: self.nats.backlog() == 0, 20, "the stream to empty")
        report = cli("verify", "--public-key", str(self.public_key), "--database-url", self.db_url)
        assert report.returncode == 0, report.stdout + report.stderr

    def stop(self) -> None:
        for proc in self.ingesters:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.ingesters:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ingesters' signing key pair (checkpoints are what verify checks against)."""
    from auditledger._chain.checkpoints import generate_keys

    folder = tmp_path_factory.mktemp("keys")
    generate_keys(folder)
    return folder


@pytest.fixture
def cluster(nats_server: NatsServer, pg_url: str, tmp_path: Path, keys: Path) -> Iterator[Cluster]:
    nats_server.setup(partitions=8)
    c = Cluster(nats_server, pg_url, tmp_path, keys)
    try:
        yield c
    finally:
        c.stop()


def wait_all(procs: list[subprocess.Popen[bytes]]) -> None:
    assert [p.wait(120) for p in procs] == [0] * len(procs)


def shares(pg_url: str) -> list[int]:
    """How many partitions each ingester owns, smallest first."""
    with psycopg.connect(conninfo(pg_url)) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND classid = x'61756970'::int::oid AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " GROUP BY pid ORDER BY 1"
        ).fetchall()
    return [int(r[0]) for r in rows]


def owners(pg_url: str) -> int:
    with psycopg.connect(conninfo(pg_url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND classid = x'61756970'::int::oid AND granted"
        ).fetchone()
    return int(row[0]) if row else 0
