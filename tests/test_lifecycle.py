"""Exit, signals, SIGKILL, fork and shared spools, in real child processes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from auditledger import AuditLogger, AuditStore
from tests.children import (
    KILLED_DURING_HANG,
    KILLED_IN_FLIGHT,
    child,
    run_child,
    wait_for_line,
)
from tests.helpers import via
from tests.tcp_proxy import TcpProxy

LOG_AND_EXIT = """
import sys
from auditledger import AuditLogger
url, spool, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
audit = AuditLogger(url, spool_dir=spool, flush_interval=30.0)
for i in range(n):
    audit.log_audit_event("login", user_id=f"exit-{i}")
# No close(), no flush(): interpreter exit must write or spool everything.
"""


def count(url: str) -> int:
    with AuditStore(url) as store:
        return store.count()


def distinct_users(url: str) -> set[str]:
    with AuditStore(url) as store:
        return {e.user_id or "" for e in store.events(limit=1_000_000)}


def test_normal_exit_without_close_writes_everything(db_url: str, spool_dir: Path) -> None:
    done = run_child(LOG_AND_EXIT, db_url, str(spool_dir), "5000")
    assert done.returncode == 0, done.stderr
    assert count(db_url) == 5000


def test_exit_while_the_database_is_down_spools_and_the_next_process_replays(
    proxy: TcpProxy, pg_url: str, spool_dir: Path
) -> None:
    proxy.refuse()
    done = run_child(LOG_AND_EXIT, via(proxy, pg_url), str(spool_dir), "3000")
    assert done.returncode == 0, done.stderr
    assert count(pg_url) == 0
    proxy.restore()
    with AuditLogger(via(proxy, pg_url), spool_dir=spool_dir) as later:
        assert later.flush(30)
        assert later.stats().replayed == 3000
    assert distinct_users(pg_url) == {f"exit-{i}" for i in range(3000)}


SIGTERM_CHILD = """
import sys
from auditledger import AuditLogger
url, spool, n, handle = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
audit = AuditLogger(url, spool_dir=spool, flush_interval=30.0, handle_sigterm=handle)
for i in range(n):
    audit.log_audit_event("logout", user_id=f"term-{i}")
print("ready", flush=True)
sys.stdin.read()  # blocks until the parent's SIGTERM arrives
"""


@pytest.mark.parametrize("handle", [True, False])
def test_sigterm_handler_flushes_before_the_process_ends(
    handle: bool, db_url: str, spool_dir: Path
) -> None:
    proc = child(SIGTERM_CHILD, db_url, str(spool_dir), "2000", "1" if handle else "0")
    wait_for_line(proc, "ready")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM
    # Python's default SIGTERM skips atexit: without the opt-in handler the queue is lost.
    assert count(db_url) == (2000 if handle else 0)


@pytest.mark.parametrize("write_ahead", [True, False])
def test_sigkill_loses_at_most_the_batch_in_flight_and_write_ahead_keeps_it(
    write_ahead: bool, proxy: TcpProxy, pg_url: str, spool_dir: Path
) -> None:
    proxy.hang()
    proc = child(
        KILLED_IN_FLIGHT, via(proxy, pg_url), str(spool_dir), "3000", "1" if write_ahead else "0"
    )
    line = wait_for_line(proc, "in-flight")
    assert line == "in-flight 0"
    proc.kill()
    proc.communicate(timeout=30)
    proxy.refuse()  # the killed child's hung connection must not commit anything later
    proxy.restore()
    # The spool belongs to the database as the child named it: the survivor names it alike.
    with AuditLogger(via(proxy, pg_url), spool_dir=spool_dir) as survivor:
        assert survivor.flush(30)
    assert count(pg_url) == (3000 if write_ahead else 0)


def test_write_ahead_bounds_sigkill_loss_while_the_database_hangs(
    proxy: TcpProxy, pg_url: str, spool_dir: Path
) -> None:
    # The batch in flight is written ahead; what queues behind it must reach the spool once
    # the write overruns flush_interval, not wait in memory for the hang to end.
    proxy.hang()
    proc = child(KILLED_DURING_HANG, via(proxy, pg_url), str(spool_dir), "20")
    assert wait_for_line(proc, "queued") == "queued 0"
    proc.kill()
    proc.communicate(timeout=30)
    proxy.refuse()  # the killed child's hung connection must not commit anything later
    proxy.restore()
    with AuditLogger(via(proxy, pg_url), spool_dir=spool_dir) as survivor:
        assert survivor.flush(60)
    assert distinct_users(pg_url) == {f"hang-{i}" for i in range(250 + 20 * 40)}


SHARED_SPOOL_CHILD = """
import sys
from auditledger import AuditLogger
url, spool, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
audit = AuditLogger(url, spool_dir=spool, write_timeout=1.0, flush_interval=0.05)
for i in range(n):
    audit.log_audit_event("login", user_id=f"victim-{i}")
# The database is down for this process: wait until its events reached the spool.
for _ in range(300):
    audit.flush(0.1)
    s = audit.stats()
    if s.spooled == n and s.queue_depth == 0:
        break
print("spooled", audit.stats().spooled, flush=True)
sys.stdin.read()
"""


def test_survivor_replays_the_events_of_a_killed_process_sharing_its_spool(
    pg_url: str, spool_dir: Path
) -> None:
    survivor = AuditLogger(pg_url, spool_dir=spool_dir)
    survivor.audit_login("survivor", None)
    assert survivor.flush(30)
    # The same database, but a role the server refuses: the database is down for the victim.
    refused = make_url(pg_url).set(username="auditledger_no_such_role")
    victim = child(
        SHARED_SPOOL_CHILD, refused.render_as_string(hide_password=False), str(spool_dir), "2500"
    )
    assert wait_for_line(victim, "spooled") == "spooled 2500"
    # Alive, the victim holds its segment locked: the survivor must leave it alone.
    assert survivor.flush(5)
    assert count(pg_url) == 1
    victim.kill()
    victim.communicate(timeout=30)
    assert survivor.flush(30)
    survivor.close()
    assert distinct_users(pg_url) == {"survivor"} | {f"victim-{i}" for i in range(2500)}
    assert count(pg_url) == 2501


FORK_CHILD = """
import os, sys
from auditledger import AuditLogger
url, spool = sys.argv[1], sys.argv[2]
audit = AuditLogger(url, spool_dir=spool)   # created before the fork, as with gunicorn --preload
audit.log_audit_event("login", user_id="parent-before-fork")
pids = []
for w in range(3):
    pid = os.fork()
    if pid == 0:
        for i in range(500):
            audit.log_audit_event("login", user_id=f"worker{w}-{i}")
        ok = audit.flush(30)
        os._exit(0 if ok else 3)
    pids.append(pid)
for i in range(500):
    audit.log_audit_event("logout", user_id=f"parent-{i}")
codes = [os.waitpid(p, 0)[1] for p in pids]
print("children", codes, flush=True)
assert audit.flush(30)
"""


def test_forked_workers_each_write_their_own_events_once(db_url: str, spool_dir: Path) -> None:
    done = run_child(FORK_CHILD, db_url, str(spool_dir))
    assert done.returncode == 0, done.stderr
    assert "children [0, 0, 0]" in done.stdout
    users = distinct_users(db_url)
    assert count(db_url) == 1 + 3 * 500 + 500
    assert len(users) == count(db_url)


def test_no_stray_segment_files_after_a_clean_run(db_url: str, spool_dir: Path) -> None:
    with AuditLogger(db_url, spool_dir=spool_dir, queue_size=100) as audit:
        for i in range(5000):  # overflows the small queue into the spool
            audit.log_audit_event("login", user_id=str(i))
        assert audit.flush(30)
        assert audit.stats().spooled > 0
    assert list(spool_dir.glob("*.seg")) == []
    assert count(db_url) == 5000
    assert os.listdir(spool_dir) == []


MULTIPROCESSING_CHILD = """
import multiprocessing, sys
from auditledger import AuditLogger
url, spool = sys.argv[1], sys.argv[2]
audit = AuditLogger(url, spool_dir=spool, flush_interval=30.0)

def work(n):
    # Logged with the logger inherited from the parent; the child then ends through
    # os._exit, which skips atexit.
    for i in range(200):
        audit.log_audit_event("login", user_id=f"mp{n}-{i}")

if __name__ == "__main__":
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=work, args=(n,)) for n in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    print("exitcodes", [p.exitcode for p in procs], flush=True)
"""


def test_multiprocessing_children_write_their_events_before_they_exit(
    db_url: str, spool_dir: Path
) -> None:
    done = run_child(MULTIPROCESSING_CHILD, db_url, str(spool_dir))
    assert done.returncode == 0, done.stderr
    assert "exitcodes [0, 0]" in done.stdout
    assert distinct_users(db_url) == {f"mp{n}-{i}" for n in range(2) for i in range(200)}
