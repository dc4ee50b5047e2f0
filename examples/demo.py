"""The demo behind `make demo`: a realistic burst of audit events on SQLite, then the newest.

Several simulated users in several Slack workspaces log in, change settings, request GDPR
exports and deletions, connect OAuth providers and change subscriptions, all through the
public API, from a few threads at once. Then the newest events are printed as a table.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import auditledger
from auditledger import AuditLogger, WorkspaceRef

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo-data"
DATABASE_URL = f"sqlite:///{DEMO_DIR / 'auditledger-demo.db'}"
TEAMS = {"T01ACME": "Acme Corp", "T02GLOBEX": "Globex", "T03INITECH": "Initech"}
IPS = ["203.0.113.7", "198.51.100.23", "2001:db8::42", "192.0.2.14"]
AGENTS = [
    "Mozilla/5.0 (Macintosh) Safari/605.1.15",
    "Slackbot 1.0",
    "Mozilla/5.0 (X11) Firefox/133.0",
]


def simulate_user(audit: AuditLogger, user: str, team: str, rng: random.Random) -> None:
    ws = WorkspaceRef(team, name=TEAMS[team])
    ip, agent = rng.choice(IPS), rng.choice(AGENTS)
    audit.audit_login(user, ws, ip_address=ip, user_agent=agent)
    for _ in range(rng.randint(20, 60)):
        roll = rng.random()
        if roll < 0.6:
            setting = rng.choice(["digest_channel", "tone", "auto_reply", "language"])
            audit.audit_settings_change(
                user, ws, setting, {"value": rng.randint(1, 5)}, {"value": rng.randint(6, 9)}
            )
        elif roll < 0.7:
            audit.audit_oauth_connected(user, ws, rng.choice(["google", "github"]))
        elif roll < 0.8:
            audit.audit_data_export(user, ws)
        elif roll < 0.85:
            audit.audit_data_deletion(user, ws)
        else:
            audit.log_audit_event(
                "suggestion.generated",
                user_id=user,
                workspace_id=ws,
                details={"latency_ms": rng.randint(200, 900), "api_token": "xoxb-0000-demo"},
            )
    audit.audit_logout(user, ws)


def main() -> int:
    DEMO_DIR.mkdir(exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "auditledger.cli", "db", "upgrade", "--database-url", DATABASE_URL],
        check=True,
    )
    rng = random.Random(8)  # noqa: S311 - simulated traffic, not security
    with AuditLogger(DATABASE_URL, spool_dir=DEMO_DIR / "spool") as audit:
        started = time.perf_counter()
        threads = [
            threading.Thread(
                target=simulate_user,
                args=(audit, f"U{n:04d}", rng.choice(list(TEAMS)), random.Random(n)),  # noqa: S311
            )
            for n in range(40)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        audit.audit_subscription_created(WorkspaceRef("T01ACME"), "pro_monthly", {"seats": 25})
        audit.audit_admin_action("U0000", WorkspaceRef("T01ACME"), "rotated the bot token")
        logged = time.perf_counter() - started
        assert audit.flush(30), "the demo database did not take the events"
        stats = audit.stats()
    print(
        f"\n{stats.enqueued} events from 40 users in {len(TEAMS)} workspaces: logged in "
        f"{logged * 1000:.0f} ms, {stats.written} stored, {stats.quarantined} quarantined, "
        f"{sum(stats.dropped.values())} dropped (note the api_token value: redacted).\n"
    )
    subprocess.run(
        [sys.executable, "-m", "auditledger.cli", "events", "--database-url", DATABASE_URL,
         "--limit", "15"],
        check=True,
    )  # fmt: skip
    auditledger.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
