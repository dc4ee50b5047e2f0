"""Running small auditledger programs in child processes (exit, signals, fork, crashes)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(code: str, *args: str) -> subprocess.Popen[str]:
    """Start ``code`` in a new interpreter; it reads its arguments from sys.argv[1:]."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def run_child(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = child(code, *args)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_for_line(proc: subprocess.Popen[str], expected: str) -> str:
    """Read the child's stdout up to a line starting with ``expected`` (its ready signal)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(expected):
            return line.strip()
    _, err = proc.communicate(timeout=10)
    raise AssertionError(f"child ended before {expected!r}: {err}")


# Logs N events, waits until the writer holds them all in one batch that cannot complete (the
# test hangs or locks the database), says "in-flight <queued>", then waits to be killed.
KILLED_IN_FLIGHT = """
import sys
from auditledger import AuditLogger
url, spool, n, wal = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
audit = AuditLogger(url, spool_dir=spool, write_ahead=wal, write_timeout=60.0,
                    flush_interval=0.05, batch_size=5000)
for i in range(n):
    audit.log_audit_event("admin_action", user_id=f"kill-{i}", details={"i": i})
# The batch is now in flight, waiting on a database that does not answer (with write-ahead:
# once its copy, a record of 150 bytes or more per event, is in the spool).
for _ in range(200):
    s = audit.stats()
    if audit.flush(0.1) or (s.queue_depth == 0 and (not wal or s.spool_bytes >= 150 * n)):
        break
print("in-flight", audit.stats().queue_depth, flush=True)
sys.stdin.read()
"""


# Write-ahead, a database that hangs from the first write on, and events that keep arriving:
# a burst (more than one batch, so one is taken ahead) then waves. Says "queued <n>" once the
# queue is empty or after ~10 s, then waits to be killed.
KILLED_DURING_HANG = """
import sys
from auditledger import AuditLogger
url, spool, waves = sys.argv[1], sys.argv[2], int(sys.argv[3])
audit = AuditLogger(url, spool_dir=spool, write_ahead=True, write_timeout=120.0,
                    flush_interval=0.05, batch_size=100)
n = 0
for i in range(250):
    audit.log_audit_event("admin_action", user_id=f"hang-{n}")
    n += 1
for wave in range(waves):
    audit.flush(0.05)  # the writer is stuck: this only lets a flush_interval pass
    for i in range(40):
        audit.log_audit_event("admin_action", user_id=f"hang-{n}")
        n += 1
for _ in range(200):
    if audit.stats().queue_depth == 0:
        break
    audit.flush(0.05)
print("queued", audit.stats().queue_depth, flush=True)
sys.stdin.read()
"""
