"""Child processes for the scale-out tests: ``python -m tests.nats_children publish URL SPOOL
N TAG`` logs N events (over a few workspaces) to the stream, then closes (flushing)."""

from __future__ import annotations

import sys

from auditledger import AuditLogger, WorkspaceRef


def publish(url: str, spool: str, count: int, tag: str) -> int:
    with AuditLogger(nats_url=url, spool_dir=spool, write_timeout=3) as audit:
        for i in range(count):
            workspace = None if i % 7 == 0 else WorkspaceRef(f"T{i % 5}")
            audit.log_audit_event(
                "auth.login", user_id=f"{tag}-{i}", workspace_id=workspace, resource_id=tag
            )
        ok = audit.flush(60)
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1] == "publish":
        sys.exit(publish(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]))
    sys.exit(2)
