"""A writer process for tests/test_tamper.py: ``python -m tests.tamper_writer URL KEY SPOOL
READY_DIR INDEX COUNT``.

It waits until every sibling is ready, so that the processes really append to the same chains
at the same moment, then logs COUNT events over three workspaces and no workspace, flushing
every 20 events so that each process writes many small transactions.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from auditledger import AuditLogger, WorkspaceRef

WRITERS = 4


def main() -> None:
    url, key, spool, ready_dir, index, count = sys.argv[1:7]
    ready = Path(ready_dir)
    with AuditLogger(
        url,
        spool_dir=spool,
        signing_key=key,
        checkpoint_interval=0.2,
        batch_size=50,
        flush_interval=0.01,
    ) as audit:
        (ready / index).touch()
        deadline = time.monotonic() + 60
        # A start barrier between processes, not a wait for background work.
        while len(list(ready.iterdir())) < WRITERS and time.monotonic() < deadline:
            time.sleep(0.005)
        for i in range(int(count)):
            workspace = WorkspaceRef(f"TT{i % 4}") if i % 4 else None
            audit.log_audit_event(
                "settings_changed" if i % 2 else "login",
                user_id=f"U{index}-{i}",
                workspace_id=workspace,
                ip_address=f"192.0.2.{i % 200}",
                user_agent="tamper-test/1.0",
                details={"writer": int(index), "i": i, "ratio": 0.5, "flag": True},
            )
            if i % 20 == 19 and not audit.flush(30):
                sys.exit("flush timed out")
        if not audit.flush(30):
            sys.exit("flush timed out")
        stats = audit.stats()
        if stats.written != int(count):
            sys.exit(f"wrote {stats.written} of {count}: {stats.last_error}")


if __name__ == "__main__":
    main()
