"""tail --follow: every new event exactly once, even when commits come out of time order."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import psycopg

from auditledger import AuditLogger, AuditReader
from auditledger._chain.links import lock_keys
from auditledger._read.follow import Follower
from tests.test_api import make_workspace


def test_a_late_commit_with_an_older_time_is_followed(pg_url: str, spool_dir: Path) -> None:
    """Writer A's event is older than B's but commits after it (A waits on its chain's lock):
    a follower going by time would have moved past it; chain positions do not."""
    ws_a, ws_b = make_workspace(pg_url, "T0A"), make_workspace(pg_url, "T0B")
    with AuditReader(pg_url) as reader:
        follower = Follower(reader.filters())
        with reader.engine.connect() as conn:
            follower.start(conn)
        holder = psycopg.connect(pg_url, autocommit=True)
        lock_class = 0x61756474  # the writer's first advisory-lock key
        (key,) = lock_keys([ws_a])
        holder.execute("SELECT pg_advisory_lock(%s, %s)", (lock_class, key))
        with (
            AuditLogger(pg_url, spool_dir=spool_dir / "a") as a,
            AuditLogger(pg_url, spool_dir=spool_dir / "b") as b,
        ):
            a.log_audit_event("older", workspace_id=ws_a)
            b.log_audit_event("newer", workspace_id=ws_b)
            assert b.flush(10)
            assert not a.flush(0.5)  # held by the lock: not stored yet
            with reader.engine.connect() as conn:
                first = follower.poll(conn)
            holder.execute("SELECT pg_advisory_unlock(%s, %s)", (lock_class, key))
            assert a.flush(10)
        holder.close()
        with reader.engine.connect() as conn:
            second = follower.poll(conn)
            assert follower.poll(conn) == []
    assert [e.action for e in first] == ["newer"]
    assert [e.action for e in second] == ["older"]
    assert second[0].created_at < first[0].created_at


_WRITER = """
import sys
from auditledger import AuditLogger, WorkspaceRef
url, spool, tag, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with AuditLogger(url, spool_dir=spool, batch_size=7) as audit:
    for i in range(count):
        audit.log_audit_event("write", user_id=tag, workspace_id=WorkspaceRef(f"T0W{i % 3}"))
        if i % 50 == 0:
            audit.flush(10)
    assert audit.flush(30)
"""


def test_tail_follow_prints_each_event_of_several_writers_once(
    db_url: str, spool_dir: Path, tmp_path: Path
) -> None:
    writers, per_writer = 3, 200
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        audit.log_audit_event("before", user_id="U0")
        assert audit.flush(10)
    command = [
        sys.executable, "-m", "auditledger.cli", "tail", "--database-url", db_url, "--follow",
        "--json", "--lines", "1", "--interval", "0.05", "--max-events", str(writers * per_writer),
    ]  # fmt: skip
    lines: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as tail:
        assert tail.stdout is not None
        first = json.loads(tail.stdout.readline())  # the newest event: following has begun
        assert first["action"] == "before"
        collect = threading.Thread(target=lambda: lines.extend(tail.stdout or []))
        collect.start()
        script = [sys.executable, "-c", _WRITER, db_url]
        procs = [
            subprocess.Popen([*script, str(tmp_path / f"s{n}"), f"W{n}", str(per_writer)])
            for n in range(writers)
        ]
        for p in procs:
            assert p.wait(timeout=120) == 0
        assert tail.wait(timeout=120) == 0
        collect.join(timeout=10)
    followed = [json.loads(x) for x in lines]
    ids = [e["id"] for e in followed]
    assert len(ids) == writers * per_writer == len(set(ids))
    with AuditReader(db_url) as reader:
        stored = {str(e.id) for e in reader.iter_events(action="write")}
    assert set(ids) == stored
    for ws in {e["workspace_id"] for e in followed}:
        seqs = [e["seq"] for e in followed if e["workspace_id"] == ws]
        assert seqs == sorted(seqs)  # each chain in its order
