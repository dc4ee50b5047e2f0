"""Publishing to JetStream: prepared events with their ids, the spool when the server cannot
take them, and replays under the same ids. Each test runs its own nats-server."""

from __future__ import annotations

import importlib
import random
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from auditledger import AuditLogger, ConfigurationError, MissingExtraError, WorkspaceRef
from auditledger._nats.decode import decode_stream_message
from auditledger._nats.publisher import message_id
from auditledger._nats.wire import ENCODING_HEADER, ZSTD
from auditledger.metrics import AuditLedgerCollector
from tests.helpers import cli
from tests.nats_server import NatsServer, nats_server

__all__ = ["nats_server"]


async def _peek(nc: Any, expected: int) -> list[Any]:
    """Every message in the stream, without acknowledging (removing) any."""
    js = nc.jetstream()
    sub = await js.pull_subscribe(">", durable="peek", stream="AUDIT")
    msgs: list[Any] = []
    while len(msgs) < expected:
        msgs += await sub.fetch(expected - len(msgs), timeout=5)
    await js.delete_consumer("AUDIT", "peek")
    return msgs


def stream_events(server: NatsServer) -> list[tuple[Any, Any]]:
    """(message, row) for every event in the stream: a message carries many."""
    msgs = server.run(_peek, server.backlog())
    out = []
    for m in msgs:
        assert m.headers[ENCODING_HEADER] == ZSTD  # publishers compress every message
        rows, kept, bad = decode_stream_message(m.data, m.headers)
        assert (kept, bad) == ([], 0)
        out += [(m, r) for r in rows]
    return out


def test_events_reach_the_stream_prepared_with_their_ids(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    nats_server.setup(partitions=4)
    workspace = uuid.uuid4()
    with AuditLogger(nats_url=nats_server.url, spool_dir=tmp_path / "spool") as audit:
        for i in range(40):
            audit.log_audit_event(
                "settings.change",
                user_id=f"U{i}",
                workspace_id=workspace if i % 2 else WorkspaceRef("T042"),
                details={"password": "hunter2", "n": i},
            )
        assert audit.flush(10)
        stats = audit.stats()
        collected = AuditLedgerCollector(audit).collect()
        metrics = {m.name: m.samples[0].value for m in collected if m.samples}
    assert (stats.written, stats.spooled, stats.dropped) == (40, 0, {})
    assert metrics["auditledger_events_published"] == 40
    found = stream_events(nats_server)
    msgs = list({m.headers["Nats-Msg-Id"]: m for m, _ in found}.values())
    rows = [r for _, r in found]
    assert len({r[0] for r in rows}) == 40
    # Many events a message (one per partition here); its id is a digest of their ids.
    assert len(msgs) < 40
    for m in msgs:
        carried = [r[0] for n, r in found if n is m]
        assert m.headers["Nats-Msg-Id"] == message_id(carried)
    assert all(b"hunter2" not in m.data for m in msgs)  # redacted before it left the process
    assert sorted(orjson.loads(r[8])["n"] for r in rows) == list(range(40))
    # A workspace's events share one partition (subject), in the order they were logged.
    by_subject: dict[str, set[str]] = {}
    for m, r in found:
        by_subject.setdefault(str(r[2]), set()).add(m.subject)
    assert all(len(subjects) == 1 for subjects in by_subject.values())
    assert by_subject[str(WorkspaceRef("T042"))] != set()
    assert len(by_subject) == 2


def test_server_away_spools_then_replays_with_the_same_ids(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    nats_server.setup()
    nats_server.kill()
    audit = AuditLogger(nats_url=nats_server.url, spool_dir=tmp_path / "spool", write_timeout=2)
    try:
        for i in range(300):
            audit.log_audit_event("auth.login", user_id=f"U{i}")
        # The first batch gives up at its deadline (write_timeout), then goes to the spool.
        assert not audit.flush(3)
        away = audit.stats()
        assert away.spooled == 300
        assert not away.healthy
        assert away.written == 0
        nats_server.start()  # the same store: the stream is still there
        assert audit.flush(30)
        back = audit.stats()
    finally:
        audit.close()
    assert back.replayed == 300
    assert back.dropped == {}
    ids = [r[0] for _, r in stream_events(nats_server)]
    assert len(ids) == len(set(ids)) == 300


def test_a_full_stream_sends_events_to_the_spool(nats_server: NatsServer, tmp_path: Path) -> None:
    nats_server.setup(max_bytes=1024**2)  # discard-new: the server refuses, never deletes
    audit = AuditLogger(nats_url=nats_server.url, spool_dir=tmp_path / "spool", batch_size=500)
    try:
        rng = random.Random(4)
        for i in range(4000):
            # ~470 bytes a message cannot compress away: 4000 of them overfill the 1 MiB.
            pad = [rng.getrandbits(63) for _ in range(60)]
            audit.log_audit_event("auth.login", user_id=f"U{i}", details={"pad": pad})
        assert not audit.flush(3)
        full = audit.stats()
        assert full.spooled > 0
        assert full.last_error is not None
        assert full.dropped == {}
        assert 0 < nats_server.backlog() < 4000
        nats_server.setup(max_bytes=64 * 1024**2)
        assert audit.flush(60)
    finally:
        audit.close()
    # Batches that were half published went to the spool whole; the server's duplicate
    # window dropped the messages it already had when they were replayed.
    ids = [r[0] for _, r in stream_events(nats_server)]
    assert len(ids) == len(set(ids)) == 4000


def test_options_are_checked_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        AuditLogger("sqlite:///x.db", nats_url="nats://127.0.0.1:4222")
    with pytest.raises(ConfigurationError, match="nats://host:4222"):
        AuditLogger(nats_url="http://127.0.0.1:4222", spool_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="ingesters"):
        AuditLogger(nats_url="nats://127.0.0.1:4222", signing_key="k", spool_dir=tmp_path)


def test_the_environment_picks_nats(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AUDITLEDGER_NATS_URL", "nats://127.0.0.1:1")
    with AuditLogger(spool_dir=tmp_path) as audit:
        assert audit.database_backend == "nats"
    with AuditLogger(f"sqlite:///{tmp_path / 'a.db'}", spool_dir=tmp_path) as audit:
        assert audit.database_backend == "sqlite"  # an explicit database wins


def test_the_core_does_not_import_nats() -> None:
    code = (
        "import sys, tempfile, auditledger\n"
        "d = tempfile.mkdtemp()\n"
        "auditledger.AuditLogger(f'sqlite:///{d}/a.db', spool_dir=d).close()\n"
        "assert 'nats' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_missing_nats_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(sys.modules):
        if name == "nats" or name.startswith(("nats.", "auditledger._nats.")):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "nats", None)
    with pytest.raises(MissingExtraError, match=r"auditledger\[nats\]"):
        importlib.import_module("auditledger._nats.publisher")


def test_setup_is_idempotent_and_keeps_waiting_events_reachable(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    setup = ("nats", "setup", "--nats-url", nats_server.url, "--partitions", "4")
    first, again = cli(*setup), cli(*setup)
    assert first.returncode == 0, first.stderr
    assert "created: 4 partitions" in " ".join(first.stdout.split())
    assert again.returncode == 0
    assert "up to date: 4 partitions" in " ".join(again.stdout.split())
    with AuditLogger(nats_url=nats_server.url, spool_dir=tmp_path) as audit:
        audit.log_audit_event("auth.login", user_id="U1")
        assert audit.flush(10)
    # Another partition count while events wait would strand them: refused, one line, exit 2.
    changed = cli("nats", "setup", "--nats-url", nats_server.url, "--partitions", "8")
    assert changed.returncode == 2
    assert "drain" in changed.stderr
    assert "Traceback" not in changed.stderr
    assert nats_server.backlog() == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nats", "setup", "--nats-url", "http://127.0.0.1:4222"), "nats://host:4222"),
        (("nats", "setup", "--nats-url", "nats://127.0.0.1:4222", "--replicas", "2"), "1 or 3"),
        (
            ("ingest", "--nats-url", "nats://127.0.0.1:4222", "--database-url", "sqlite:///a.db"),
            "postgresql://",
        ),
    ],
)
def test_command_mistakes_are_one_line_errors(args: tuple[str, ...], message: str) -> None:
    result = cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
