"""The reference apps, started with the commands the README gives, driven by ``make demo``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import by_action, stored

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_drives_both_reference_apps(tmp_path: Path) -> None:
    env = {**os.environ, "DEMO_DATA_DIR": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")}
    env.pop("AUDITLEDGER_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "examples/demo.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "newest" in done.stdout
    events = by_action(stored(f"sqlite:///{tmp_path / 'audit.db'}"))
    assert len(events["oauth_connected"]) == 3
    assert len(events["oauth_disconnected"]) == 2
    assert len(events["login"]) == 3
    assert len(events["login_failed"]) == 3
    assert {e.ip_address for e in events["login_failed"]} == {"192.0.2.200"}
    assert "U0EVE" not in {e.user_id for group in events.values() for e in group}
