"""What an operator meets around the stream: ``nats setup`` re-run with other flags or on a
single server, ``ingest`` started before its stream, its server or its tables exist, and a
partition count changed under running ingesters and publishers."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from auditledger import AuditLogger, WorkspaceRef
from tests.helpers import cli
from tests.nats_cluster import ROOT, Cluster, cluster, counts, keys, owners
from tests.nats_server import NatsServer, _free_port, nats_server, wait_until

__all__ = ["cluster", "keys", "nats_server"]


def _setup(server: NatsServer, *flags: str) -> subprocess.CompletedProcess[str]:
    return cli("nats", "setup", "--nats-url", server.url, *flags)


def _stream_config(server: NatsServer) -> Any:
    from auditledger._nats.partitions import STREAM

    async def config(nc: Any) -> Any:
        return (await nc.jetstream().stream_info(STREAM)).config

    return server.run(config)


def test_setup_again_keeps_what_it_is_not_given_and_says_what_changed(
    nats_server: NatsServer,
) -> None:
    first = _setup(nats_server, "--partitions", "4", "--max-bytes", str(2 * 1024**2))
    assert first.returncode == 0, first.stderr
    again = _setup(nats_server)  # no flags: nothing is reset to the defaults
    assert again.returncode == 0, again.stderr
    assert "up to date: 4 partitions, 1 replica(s), max 2097152 bytes" in again.stdout
    assert _stream_config(nats_server).max_bytes == 2 * 1024**2
    bigger = _setup(nats_server, "--max-bytes", str(4 * 1024**2))
    assert bigger.returncode == 0, bigger.stderr
    assert "updated (max bytes: 2097152 -> 4194304): 4 partitions" in bigger.stdout
    assert _stream_config(nats_server).max_bytes == 4 * 1024**2


def test_setup_refuses_replicas_a_single_server_cannot_keep(nats_server: NatsServer) -> None:
    """Creating: the server refuses. Updating: it would take num_replicas=3 and keep one
    copy, so setup refuses first."""
    for _ in ("create", "update"):
        result = _setup(nats_server, "--replicas", "3")
        assert result.returncode == 2
        assert "not part of a cluster" in result.stderr
        assert "Traceback" not in result.stderr
        assert _setup(nats_server).returncode == 0  # the stream, for the update round
    assert _stream_config(nats_server).num_replicas == 1


def test_setup_on_a_server_without_jetstream_says_so(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "store", jetstream=False)
    server.start()
    try:
        result = _setup(server)
    finally:
        server.kill()
    assert result.returncode == 2
    assert "does not offer JetStream" in result.stderr


def _ingest(nats_url: str, db_url: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "auditledger.cli", "ingest", "--nats-url", nats_url,
             "--database-url", db_url],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip


def _stopped(proc: subprocess.Popen[bytes], log: Path) -> str:
    """SIGINT (Ctrl-C), then what the ingester wrote; it must have stopped cleanly."""
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    text = log.read_text()
    assert "Traceback" not in text
    assert "stopped: 0 events stored" in text
    return text


@pytest.mark.postgres
@pytest.mark.parametrize("server", ["unreachable", "without JetStream", "without the stream"])
def test_ingest_says_what_it_waits_for_and_stops_cleanly_meanwhile(
    server: str, pg_url: str, tmp_path: Path
) -> None:
    expected = {
        "unreachable": "NATS connection failed",
        "without JetStream": "does not offer JetStream",
        "without the stream": "no stream yet",
    }[server]
    nats = NatsServer(tmp_path / "store", jetstream=server != "without JetStream")
    if server != "unreachable":
        nats.start()
    url = nats.url if server != "unreachable" else f"nats://127.0.0.1:{_free_port()}"
    log = tmp_path / "ingest.log"
    try:
        proc = _ingest(url, pg_url, log)
        wait_until(lambda: expected in log.read_text(), 20, f"'{expected}'")
        _stopped(proc, log)
    finally:
        nats.kill()


@pytest.mark.postgres
def test_ingest_waits_for_the_tables_and_stores_once_they_exist(
    nats_server: NatsServer, pg_databases: Any, tmp_path: Path
) -> None:
    """Started before `db upgrade` (a deployment's usual race): it says why it waits, takes
    no partition meanwhile, and stores what waited once the tables are there."""
    from auditledger._db.migrate import upgrade

    nats_server.setup(partitions=4)
    db_url = pg_databases.create()  # empty: not upgraded
    log = tmp_path / "ingest.log"
    proc = _ingest(nats_server.url, db_url, log)
    try:
        with AuditLogger(nats_url=nats_server.url, spool_dir=tmp_path / "s") as audit:
            for i in range(50):
                audit.log_audit_event("auth.login", user_id=f"U{i}")
            assert audit.flush(20)
        wait_until(lambda: "run `auditledger db upgrade`" in log.read_text(), 20, "the hint")
        assert owners(db_url) == 0
        upgrade(db_url)
        wait_until(lambda: counts(db_url)[0] == 50, 30, "the events stored")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert "stopped: 50 events stored" in log.read_text()


@pytest.mark.postgres
def test_a_new_partition_count_is_followed_by_running_ingesters_and_publishers(
    cluster: Cluster,
) -> None:
    """`nats setup --partitions` on a drained stream while an ingester and a publisher run:
    the publisher is refused on the old subjects (and spools), the ingester moves to the
    new partitions within seconds; nothing is stranded."""
    cluster.ingester()
    wait_until(lambda: owners(cluster.db_url) == 8, 30, "the ingester to own 8 partitions")
    with AuditLogger(nats_url=cluster.nats.url, spool_dir=cluster.tmp / "s") as audit:

        def log(first: int) -> None:
            for i in range(first, first + 200):
                audit.log_audit_event(
                    "auth.login", user_id=str(i), workspace_id=WorkspaceRef(f"T{i % 5}")
                )
            assert audit.flush(60)

        log(0)
        cluster.wait_stored(200)
        wait_until(lambda: cluster.nats.backlog() == 0, 20, "the stream to drain")
        changed = _setup(cluster.nats, "--partitions", "3")
        assert changed.returncode == 0, changed.stderr
        assert "partitions: 8 -> 3" in changed.stdout
        log(200)
        wait_until(lambda: owners(cluster.db_url) == 3, 30, "the ingester to own 3 partitions")
        cluster.wait_stored(400)
    cluster.check(400)


def test_a_cluster_url_lists_several_servers(nats_server: NatsServer, tmp_path: Path) -> None:
    """A cluster's servers, separated by commas: the client fails over from one that does not
    answer to one that does. Listed in another order, the same servers share a spool."""
    from auditledger._nats.settings import check_nats_url

    dead = f"nats://127.0.0.1:{_free_port()}"
    urls = f"{dead},{nats_server.url}"
    assert check_nats_url(urls) == check_nats_url(f" {nats_server.url} , {dead}")
    assert check_nats_url(urls) != check_nats_url(nats_server.url)
    setup = cli("nats", "setup", "--nats-url", urls, "--partitions", "2")
    assert setup.returncode == 0, setup.stderr
    with AuditLogger(nats_url=urls, spool_dir=tmp_path / "s") as audit:
        for i in range(20):
            audit.log_audit_event("auth.login", user_id=f"U{i}")
        assert audit.flush(20)
        assert audit.stats().spooled == 0
    assert nats_server.backlog() >= 1


@pytest.mark.postgres
def test_status_json_gives_the_stream_and_ingesters_as_numbers(
    cluster: Cluster, tmp_path: Path
) -> None:
    import json

    def status() -> dict[str, Any]:
        out = cli("status", "--json", "--nats-url", cluster.nats.url, "--database-url",
                  cluster.db_url)  # fmt: skip
        assert out.returncode == 0, out.stderr
        report: dict[str, Any] = json.loads(out.stdout)
        return report

    with AuditLogger(nats_url=cluster.nats.url, spool_dir=tmp_path / "s") as audit:
        audit.log_audit_event("auth.login", user_id="U1", workspace_id=WorkspaceRef("T1"))
        assert audit.flush(20)
    waiting = status()
    assert waiting["stream"]["messages_waiting"] == 1
    assert waiting["stream"]["partitions"] == 8
    assert sum(waiting["stream"]["waiting_per_partition"].values()) == 1
    assert waiting["ingesters"] == {}
    cluster.ingester()
    cluster.wait_stored(1)
    wait_until(lambda: cluster.nats.backlog() == 0, 20, "the stream to drain")
    running = status()
    assert running["stream"]["messages_waiting"] == 0
    assert [sorted(parts) for parts in running["ingesters"].values()] == [list(range(8))]


def test_setup_never_lowers_the_cap_under_what_the_stream_holds(nats_server: NatsServer) -> None:
    """The server would make room by deleting the oldest messages: events not stored yet."""
    from auditledger._nats.partitions import subject

    assert _setup(nats_server, "--partitions", "2", "--max-bytes", str(4 * 1024**2)).returncode == 0

    async def publish(nc: Any) -> None:
        js = nc.jetstream()
        for n in range(12):  # 1.2 MB: over the 1 MiB asked for below
            await js.publish(subject(2, n % 2), b"x" * 100_000)

    nats_server.run(publish)
    lower = _setup(nats_server, "--max-bytes", str(1024**2))
    assert lower.returncode == 2
    assert "delete events not stored yet" in lower.stderr
    assert nats_server.backlog() == 12
    assert _stream_config(nats_server).max_bytes == 4 * 1024**2
    enough = _setup(nats_server, "--max-bytes", str(3 * 1024**2))  # twice what it holds
    assert enough.returncode == 0, enough.stderr
    assert nats_server.backlog() == 12


@pytest.mark.postgres
def test_a_partition_change_refused_leaves_every_waiting_event_reachable(
    cluster: Cluster,
) -> None:
    """Events wait under the old subjects: the change is undone and refused, and an
    ingester started afterwards stores every one of them."""
    with AuditLogger(nats_url=cluster.nats.url, spool_dir=cluster.tmp / "s") as audit:
        for i in range(50):
            audit.log_audit_event("auth.login", user_id=str(i), workspace_id=WorkspaceRef("T1"))
        assert audit.flush(20)
    changed = _setup(cluster.nats, "--partitions", "3")
    assert changed.returncode == 2
    assert "drain" in changed.stderr
    assert "up to date: 8 partitions" in _setup(cluster.nats).stdout
    cluster.ingester()
    cluster.wait_stored(50)
    cluster.check(50)
