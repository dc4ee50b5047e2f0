"""Build bundles for the tests, and forge them the way an attacker would."""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

from auditledger import AuditLogger, WorkspaceRef

Lines = list[dict[str, object]]


def log_events(
    url: str, spool_dir: Path, count: int, team: str = "T0ACME", user_prefix: str = "U"
) -> None:
    with AuditLogger(url, spool_dir=spool_dir) as audit:
        for i in range(count):
            audit.log_audit_event(
                "settings_changed",
                user_id=f"{user_prefix}{i % 3}",
                workspace_id=WorkspaceRef(team),
                ip_address=f"198.51.100.{i}",
                user_agent="Mozilla/5.0",
                resource="settings",
                resource_id="sso_required",
                previous_value={"enabled": False, "n": i},
                new_value={"enabled": True, "n": 1.5},
                details={"note": '=HYPERLINK("http://x")'},
            )
        assert audit.flush(10)


def forge(
    source: Path, target: Path, change: Callable[[Lines], Lines], *, fix_sums: bool = True
) -> None:
    """A copy of the bundle with its events changed; with ``fix_sums`` the manifest is
    recomputed too, as an attacker who knows the format would."""
    with zipfile.ZipFile(source) as zf:
        files = {name: zf.read(name) for name in zf.namelist()}
    lines = [json.loads(x) for x in files["events.jsonl"].splitlines() if x.strip()]
    files["events.jsonl"] = b"".join(json.dumps(x).encode() + b"\n" for x in change(lines))
    if fix_sums:
        manifest = json.loads(files["manifest.json"])
        for name in manifest["files"]:
            manifest["files"][name] = hashlib.sha256(files[name]).hexdigest()
        files["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(target, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
