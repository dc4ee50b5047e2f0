"""The viewer's doors: the chain badge, pull-API tokens, and the operator's ``serve`` token."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from auditledger import AuditStore
from auditledger._viewer.serve import OperatorGate
from tests.viewer_helpers import Client, seed, viewer_over

ALICE = {"x-test-user": "alice:T0ACME"}


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str) -> Ran:
    """``auditledger ARGS`` in this process (a child process costs seconds of imports each)."""
    with warnings.catch_warnings():
        # typer (< 0.26, as pinned) calls click APIs that click 8.3 deprecates; not ours to fix.
        warnings.simplefilter("ignore", DeprecationWarning)
        from typer.testing import CliRunner

        from auditledger.cli import app

        result = CliRunner().invoke(app, list(args))
    return Ran(result.exit_code, result.stdout, result.stderr)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _badge(page: str) -> str:
    start = page.index('id="chain-badge"')
    return page[page.index(">", start) + 1 : page.index("</p>", start)]


@pytest.mark.postgres
def test_the_badge_turns_to_problems_after_a_superuser_edit(pg_url: str, tmp_path: Path) -> None:
    tenants = seed(pg_url, tmp_path / "seed")
    with viewer_over(pg_url, tmp_path / "spool") as viewer, Client(viewer) as client:
        first = client.get("/", headers=ALICE).text
        # Never verified on the request path: the first page only asks for a check.
        assert "checking" in _badge(first)
        viewer.refresh_badges()
        badge = _badge(client.get("/", headers=ALICE).text)
        assert badge.startswith("Chain intact up to ")
        assert "signatures not checked" in badge
        with psycopg.connect(
            make_url(pg_url).set(drivername="postgresql").render_as_string(False), autocommit=True
        ) as conn:
            conn.execute("SET session_replication_role = replica")
            conn.execute(
                "UPDATE audit_logs SET ip_address = '192.0.2.66' WHERE id = ("
                " SELECT id FROM audit_logs WHERE workspace_id = %s AND action = 'login'"
                " ORDER BY chain_seq LIMIT 1)",
                (tenants.acme,),
            )
        viewer.refresh_badges()
        badge = _badge(client.get("/", headers=ALICE).text)
        assert badge in ("Chain: 1 problem", "Chain: 2 problems"), badge
        # The other tenant's chain is untouched, and its badge says so.
        gina = {"x-test-user": "gina:T0GLOBEX"}
        client.get("/", headers=gina)
        viewer.refresh_badges()
        assert _badge(client.get("/", headers=gina).text).startswith("Chain intact")


def test_api_tokens_pull_one_workspace_until_revoked(db_url: str, tmp_path: Path) -> None:
    tenants = seed(db_url, tmp_path / "seed")
    made = cli(
        "tokens", "create", "--workspace", "T0ACME", "--name", "siem", "--database-url", db_url
    )
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("alt_")
    listed = cli("tokens", "list", "--json", "--database-url", db_url)
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["name"], r["workspace_id"], r["revoked_at"]) for r in rows] == [
        ("siem", str(tenants.acme), None)
    ]
    assert secret not in listed.stdout
    bearer = {"authorization": f"Bearer {secret}"}
    with viewer_over(db_url, tmp_path / "spool") as viewer, Client(viewer) as client:
        body = client.get("/api/events", headers=bearer, params={"limit": 1000}).json()
        assert body["events"]
        assert {e["workspace_id"] for e in body["events"]} == {str(tenants.acme)}
        # The token's workspace only, and the API only.
        other = client.get("/api/events", headers=bearer, params={"workspace": "T0GLOBEX"})
        assert other.status_code == 404
        assert client.get("/", headers=bearer).status_code == 401
        assert viewer.flush()
        with AuditStore(db_url) as store:
            pulls = store.events(workspace_id=tenants.acme, action="audit_log.viewed")
        assert [(p.user_id, p.details["via"]) for p in pulls] == [("api-token/siem", "api")]
        revoked = cli("tokens", "revoke", rows[0]["id"][:8], "--database-url", db_url)
        assert revoked.returncode == 0, revoked.stderr
        assert client.get("/api/events", headers=bearer).status_code == 401


def test_token_commands_refuse_bad_input(sqlite_url: str, tmp_path: Path) -> None:
    seed(sqlite_url, tmp_path / "seed")
    for args in (
        ("tokens", "create", "--workspace", "T0NOSUCH"),
        ("tokens", "create", "--workspace", "T0ACME", "--name", " "),
        ("tokens", "revoke", "12"),
        ("tokens", "revoke", "ffffffff"),
    ):
        done = cli(*args, "--database-url", sqlite_url)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        assert done.stderr.startswith("error:"), done.stderr
    missing = cli("tokens", "list", "--database-url", f"sqlite:///{tmp_path / 'none.db'}")
    assert missing.returncode == 2
    assert not (tmp_path / "none.db").exists()


def test_serve_admits_only_its_token(sqlite_url: str, tmp_path: Path) -> None:
    tenants = seed(sqlite_url, tmp_path / "seed")
    with viewer_over(sqlite_url, tmp_path / "spool") as viewer:
        gate = OperatorGate(viewer, "the-token", port=8123, actor="operator:test")
        with Client(gate) as client:
            assert client.get("/").status_code == 401
            assert client.get("/?token=wrong").status_code == 401
            assert client.get("/", headers={"authorization": "Bearer wrong"}).status_code == 401
            traded = client.get("/?token=the-token&user_id=U1")
            assert traded.status_code == 303
            assert traded.headers["location"] == "/?user_id=U1"
            cookie = traded.headers["set-cookie"]
            assert "HttpOnly" in cookie
            assert "SameSite=Strict" in cookie
            assert "the-token" not in cookie
            session = cookie.split(";")[0]
            page = client.get("/", headers={"cookie": session})
            assert page.status_code == 200
            assert "Every workspace" in page.text  # the operator sees them all
            api = client.get(
                "/api/events", headers={"authorization": "Bearer the-token"}, params={"limit": 1000}
            ).json()
            spaces = {e["workspace_id"] for e in api["events"]}
            assert {str(tenants.acme), str(tenants.globex)} <= spaces
            assert client.get("/", headers={"cookie": session + "x"}).status_code == 401


def _serve(url: str, port: int) -> tuple[subprocess.Popen[str], str]:
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "auditledger.cli",
            "serve",
            "--database-url",
            url,
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    match = re.search(r"open (http://\S+)", line)
    assert match, line
    return child, match.group(1)


def test_serve_prints_a_fresh_token_at_each_start(sqlite_url: str, tmp_path: Path) -> None:
    seed(sqlite_url, tmp_path / "seed")
    tokens = []
    for _ in range(2):
        port = free_port()
        child, link = _serve(sqlite_url, port)
        try:
            assert link.startswith(f"http://127.0.0.1:{port}/?token=")
            tokens.append(link.rsplit("=", 1)[1])
            # The server may still be binding: retry the connection, not a fixed sleep.
            with httpx.Client(transport=httpx.HTTPTransport(retries=20)) as http:
                assert http.get(link.split("?")[0]).status_code == 401
                page = http.get(link, follow_redirects=True)
            assert page.status_code == 200
            assert "sso_required" in page.text
        finally:
            child.terminate()
            child.communicate(timeout=30)
    assert tokens[0] != tokens[1]
