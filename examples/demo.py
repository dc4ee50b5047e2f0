"""``make demo``: run both reference apps on SQLite and drive them like real traffic would.

Starts the Slack backend and the web portal as their own processes (the same commands as in the
README), installs the app into three workspaces through the OAuth flow, sends slash commands and
uninstall events signed like Slack signs them, and sends browsers' requests to the portal through
a "load balancer" (X-Forwarded-For from 127.0.0.1, a trusted proxy), forged hops included. The
apps are stopped the way a deployment stops them (SIGTERM: the lifespan flushes the log), then
the newest events are printed with ``auditledger events``, followed by one investigation query,
an export bundle of one workspace and its offline verification; last, one user's erasure
request is carried out (``auditledger gdpr erase``) and ``auditledger verify`` shows every
chain intact. Nothing here calls auditledger's API.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Run as a script (``python examples/demo.py``): make the repository importable.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402 - after the path set-up above

from examples.slack_backend.fake_slack import (  # noqa: E402
    event_callback,
    signed_headers,
    slash_command,
)

DATA = Path(os.environ.get("DEMO_DATA_DIR") or ROOT / "demo-data")
DATABASE_URL = f"sqlite:///{DATA / 'audit.db'}"
SIGNING_SECRET = "demo-signing-secret"  # noqa: S105 - the no-account demo's, not a secret


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def serve(module: str, port_var: str, **env: str) -> Iterator[str]:
    """``python -m <module>`` on a free port; stopped with SIGTERM like a deployment would."""
    port = free_port()
    full_env = {
        **os.environ,
        "AUDITLEDGER_DATABASE_URL": DATABASE_URL,
        "SLACK_BACKEND_DATA_DIR": str(DATA / "slack"),
        # The apps' spool (per-user state by default) goes with the demo's data, so that
        # `make clean` leaves nothing of the demo behind.
        "XDG_STATE_HOME": str(DATA / "state"),
        port_var: str(port),
        **env,
    }
    proc = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=full_env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{module} exited with {proc.returncode} at start-up")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise SystemExit(f"{module} did not start within 60 s")
            time.sleep(0.2)  # waiting for another process to listen: nothing to flush here
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    # uvicorn shuts down gracefully on SIGTERM (the lifespan closes the audit log), then
    # re-raises the signal so that the exit status says how the process ended.
    if proc.returncode not in (0, -signal.SIGTERM):
        raise SystemExit(f"{module} ended with {proc.returncode}")


def browser(base: str, client_ip: str) -> httpx.Client:
    """A user's browser reaching the app through the load balancer (127.0.0.1, trusted)."""
    return httpx.Client(
        base_url=base,
        headers={
            "x-forwarded-for": client_ip,
            "user-agent": f"Mozilla/5.0 (demo browser {client_ip})",
        },
        timeout=10,
    )


def install(base: str, code: str, client_ip: str) -> int:
    with browser(base, client_ip) as b:
        page = b.get("/slack/install")
        cookie = page.headers["set-cookie"].split(";", 1)[0]  # Secure: httpx keeps it off http
        state = cookie.split("=", 1)[1]
        resp = b.get(f"/slack/oauth_redirect?code={code}&state={state}", headers={"cookie": cookie})
        return resp.status_code


def slack_post(base: str, built: tuple[str, str]) -> httpx.Response:
    body, content_type = built
    headers = signed_headers(SIGNING_SECRET, body, content_type=content_type)
    headers["user-agent"] = "Slackbot 1.0 (+https://api.slack.com/robots)"
    return httpx.post(f"{base}/slack/events", content=body, headers=headers, timeout=10)


def drive_slack(base: str) -> None:
    for code, ip in (
        ("acme-code", "198.51.100.10"),
        ("globex-code", "203.0.113.25"),
        ("initech-org-code", "192.0.2.77"),
    ):
        assert install(base, code, ip) == 200, code
    # A user who cancelled on Slack's consent screen, and a replayed callback (invalid state).
    with browser(base, "198.51.100.66") as b:
        assert b.get("/slack/oauth_redirect?error=access_denied&state=x").status_code == 200
        assert b.get("/slack/oauth_redirect?code=acme-code&state=stale").status_code == 400
    commands: list[tuple[str, str, str, str]] = [
        ("/digest-channel", "#general", "U0ACMEADMIN", "T0ACME"),
        ("/digest-channel", "#engineering", "U0ALICE", "T0ACME"),
        ("/export-my-data", "", "U0BOB", "T0ACME"),
        ("/digest-channel", "#ops", "U0GLOBEXOPS", "T0GLOBEX"),
        ("/export-my-data", "", "U0GINA", "T0GLOBEX"),
    ]
    for command, text, user, team in commands:
        resp = slack_post(base, slash_command(command, text, user_id=user, team_id=team))
        assert resp.status_code == 200, resp.text
    # Inside the org-wide install, commands come from one of the org's workspaces.
    org_command = slash_command(
        "/digest-channel",
        "#announcements",
        user_id="U0INITECH",
        team_id="T0INITECHHQ",
        enterprise_id="E0INITECH",
        is_enterprise_install=True,
    )
    assert slack_post(base, org_command).status_code == 200
    # A forged request (wrong signing secret) is refused and leaves no trace in the log.
    body, ctype = slash_command("/digest-channel", "#pwned", user_id="U0EVE", team_id="T0ACME")
    forged = signed_headers("not-the-secret", body, content_type=ctype)
    assert httpx.post(f"{base}/slack/events", content=body, headers=forged).status_code == 401
    # Globex uninstalls the app: Slack sends tokens_revoked, then app_uninstalled.
    revoked = {"type": "tokens_revoked", "tokens": {"oauth": ["U0GLOBEXOPS"], "bot": ["U0BOT"]}}
    for event in (revoked, {"type": "app_uninstalled"}):
        assert slack_post(base, event_callback(event, team_id="T0GLOBEX")).status_code == 200


def drive_portal(base: str) -> None:
    people = {
        "alice": "198.51.100.10",
        "bob": "198.51.100.11",
        "gina": "203.0.113.25",
    }
    sessions: dict[str, httpx.Client] = {}
    for name, ip in people.items():
        b = browser(base, ip)
        resp = b.post("/login", json={"username": name, "password": f"{name}-pass"})
        assert resp.status_code == 200, resp.text
        b.cookies.set("portal_session", resp.cookies["portal_session"])
        sessions[name] = b
    # Someone guessing passwords, with a forged hop in front of their real address.
    with browser(base, "6.6.6.6, 192.0.2.200") as attacker:
        for guess in ("123456", "password", "alice2024"):
            body: dict[str, Any] = {"username": "alice", "password": guess}
            assert attacker.post("/login", json=body).status_code == 401
    alice, bob, gina = sessions["alice"], sessions["bob"], sessions["gina"]
    assert alice.put("/settings/retention_days", json={"value": 30}).status_code == 200
    assert alice.put("/settings/retention_days", json={"value": 90}).status_code == 200
    assert gina.put("/settings/sso_required", json={"value": True}).status_code == 200
    assert bob.post("/gdpr/export").status_code == 202
    assert gina.post("/gdpr/delete").status_code == 202
    assert bob.post("/admin/users/U0ALICE/suspend").status_code == 403
    assert alice.post("/admin/users/U0MALLORY/suspend").status_code == 200
    # The audit trail in the portal: an admin looks (and that look is audited), a member may not.
    assert alice.get("/audit/", params={"action": "settings_changed"}).status_code == 200
    assert bob.get("/audit/").status_code == 404
    for b in sessions.values():
        assert b.post("/logout").status_code == 200
        b.close()


def main() -> None:
    # A fresh log each run, so the table shows this run's traffic.
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    with serve("examples.slack_backend", "SLACK_BACKEND_PORT") as slack_base:
        print(f"slack backend on {slack_base}: installs, commands, uninstall", flush=True)
        drive_slack(slack_base)
    with serve("examples.web_portal", "PORTAL_PORT") as portal_base:
        print(f"web portal on {portal_base}: sign-ins, settings, GDPR, admin", flush=True)
        drive_portal(portal_base)
    env = {**os.environ, "COLUMNS": os.environ.get("COLUMNS", "160")}

    def auditledger(*args: str) -> None:
        print(f"\n$ auditledger {' '.join(args)}", flush=True)
        subprocess.run([sys.executable, "-m", "auditledger.cli", *args], check=True, env=env)

    db = ["--database-url", DATABASE_URL]
    auditledger("events", *db, "--limit", "40")
    # An investigation: who changed sso_required in Globex in the last hour, from where?
    auditledger(
        "events", *db, "--workspace", "T0GLOBEX", "--resource-id", "sso_required", "--since", "1h"
    )
    # Acme's trail for an external auditor: a bundle that checks itself offline.
    keys = DATA / "keys"
    auditledger("keys", "generate", str(keys))
    bundle = str(DATA / "acme-bundle.zip")
    auditledger(
        "export", *db, "--workspace", "T0ACME", "--bundle", bundle,
        "--signing-key", str(keys / "signing.key"), "--actor", "demo@example.com",
    )  # fmt: skip
    auditledger("verify-bundle", bundle, "--public-key", str(keys / "signing.pub"))
    # Gina asked for erasure in the portal: the operator carries it out, and every chain
    # still verifies. The signing key doubles as the secret keying the subject's hash.
    auditledger(
        "gdpr", "erase", *db, "--user", "U0GINA", "--reason", "Art. 17 request of 2026-12-03",
        "--actor", "dpo@example.com", "--subject-key", str(keys / "signing.key"), "--yes",
    )  # fmt: skip
    auditledger("verify", *db, "--public-key", str(keys / "signing.pub"))
    shown = os.path.relpath(DATA / "audit.db")
    print(
        "\nTo look at this data in the audit-trail viewer, run `make viewer` (the same as"
        f" `auditledger serve --database-url sqlite:///{shown}`) and open the URL it prints.",
        flush=True,
    )


if __name__ == "__main__":
    main()
