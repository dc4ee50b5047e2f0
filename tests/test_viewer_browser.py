"""The viewer in a real browser: Chromium (Debian's) driven by Playwright, against uvicorn on
127.0.0.1 serving real PostgreSQL rows.

One browser for the module; each test opens its own context (cookies, time zone, viewport).
Screenshots go to test-artifacts/ (not committed).
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uvicorn
from sqlalchemy.engine import make_url
from starlette.applications import Starlette
from starlette.routing import Mount

from auditledger.web import AuditViewer, ViewerAccess
from tests.conftest import PgDatabases
from tests.viewer_helpers import XSS, Tenants, seed, viewer_over

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = os.environ.get("AUDITLEDGER_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
pytestmark = pytest.mark.postgres


def _cookie_access(request: Any) -> ViewerAccess | None:
    """The host portal's sign-in, reduced to a cookie naming the user and their workspace."""
    value = request.cookies.get("portal_user", "")
    actor, _, team = value.partition(".")
    return ViewerAccess(actor=actor, workspaces=[team]) if actor and team else None


@pytest.fixture(scope="module")
def tenants(pg_databases: PgDatabases, tmp_path_factory: pytest.TempPathFactory) -> Tenants:
    url = pg_databases.create(template=pg_databases.template)
    return seed(url, tmp_path_factory.mktemp("seed"), acme_events=45)


@pytest.fixture(scope="module")
def viewer(tenants: Tenants, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditViewer]:
    import tests.viewer_helpers as helpers

    original = helpers.header_access
    helpers.header_access = _cookie_access
    try:
        with viewer_over(tenants.url, tmp_path_factory.mktemp("spool")) as v:
            yield v
    finally:
        helpers.header_access = original


@pytest.fixture(scope="module")
def base(viewer: AuditViewer) -> Iterator[str]:
    """The viewer mounted at /audit of a host app, served by uvicorn in a thread."""
    host = Starlette(routes=[Mount("/audit", app=viewer)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(host, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # a start-up barrier, not a wait for background work
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/audit"
    finally:
        server.should_exit = True
        server.force_exit = True  # the browser's keep-alive connections need not be waited for
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-quic"]
        )
        try:
            yield b
        finally:
            b.close()


def _page(browser: Any, base: str, user: str, **options: Any) -> Any:
    context = browser.new_context(accept_downloads=True, **options)
    context.add_cookies([{"name": "portal_user", "value": user, "url": base}])
    page = context.new_page()
    page.on("dialog", lambda dialog: pytest.fail(f"a dialog opened: {dialog.message}"))
    return page


def _ids(page: Any) -> list[str]:
    ids: list[str] = page.eval_on_selector_all("tr.event", "rows => rows.map(r => r.dataset.id)")
    return ids


def test_filters_paging_diff_and_local_time(browser: Any, base: str) -> None:
    page = _page(browser, base, "alice.T0ACME", timezone_id="Asia/Kolkata")
    # Logins only: each page viewed appends an audit_log.viewed, so the newest page moves.
    page.goto(f"{base}/?limit=10&action=login")
    first = _ids(page)
    assert len(first) == 10
    seen = [first]
    for _ in range(2):
        page.get_by_role("link", name="Older →").click()
        seen.append(_ids(page))
    assert len({i for ids in seen for i in ids}) == 30
    page.get_by_role("link", name="← Newer").click()
    assert _ids(page) == seen[1]
    page.get_by_role("link", name="← Newer").click()
    assert _ids(page) == seen[0]

    page.get_by_label("User", exact=True).fill("U1")
    page.get_by_role("button", name="Apply filters").click()
    actors = page.eval_on_selector_all(
        "tr.event td[data-label=Actor]", "cells => cells.map(c => c.textContent)"
    )
    assert actors
    assert set(actors) == {"U1"}

    page.goto(f"{base}/?action=settings_changed")
    utc = page.locator("tr.event time").first.text_content()
    page.get_by_role("button", name="Show local time").click()
    local = page.locator("tr.event time").first.text_content()
    assert utc != local  # India is 5:30 ahead of UTC
    assert page.locator("#time-head").text_content() == "Time (local, UTC+05:30)"
    page.reload()  # the choice is remembered
    assert page.locator("tr.event time").first.text_content() == local
    page.get_by_role("button", name="Show UTC").click()
    assert page.locator("tr.event time").first.text_content() == utc

    # Opened from the keyboard: the previous → new diff of the settings change.
    page.locator("button.open").first.focus()
    page.keyboard.press("Enter")
    diff = page.locator("table.diff tbody tr")
    diff.first.wait_for()
    assert diff.count() == 1
    assert diff.first.locator("td").all_text_contents() == ["sso_required", "false", "true"]
    assert page.locator("button.open").first.get_attribute("aria-expanded") == "true"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "viewer-diff.png", animations="disabled")
    page.context.close()


def test_readable_on_a_phone(browser: Any, base: str) -> None:
    page = _page(browser, base, "alice.T0ACME", viewport={"width": 390, "height": 844})
    page.goto(f"{base}/?limit=10")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "viewer-phone.png", animations="disabled", full_page=True)
    page.context.close()


def test_exports_download_what_the_filters_select(browser: Any, base: str, tmp_path: Path) -> None:
    page = _page(browser, base, "alice.T0ACME")
    page.goto(f"{base}/?user_id=U2")
    files = {}
    for name in ("JSONL", "CSV", "Bundle (ZIP)"):
        with page.expect_download() as info:
            page.get_by_role("link", name=name).click()
        target = tmp_path / info.value.suggested_filename
        info.value.save_as(target)
        files[name] = target
    rows = [json.loads(line) for line in files["JSONL"].read_text().splitlines()]
    assert len(rows) == 15
    assert {r["user_id"] for r in rows} == {"U2"}
    table = list(csv.DictReader(io.StringIO(files["CSV"].read_text())))
    assert sorted(r["id"] for r in table) == sorted(r["id"] for r in rows)
    # The bundle holds the whole chain of the range (the user filter does not apply), and
    # verifies offline.
    with zipfile.ZipFile(files["Bundle (ZIP)"]) as bundle:
        lines = bundle.read("events.jsonl").splitlines()
    assert len(lines) > len(rows)
    checked = subprocess.run(
        [sys.executable, "-m", "auditledger.cli", "verify-bundle", str(files["Bundle (ZIP)"])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    page.context.close()


def test_hostile_values_never_run(browser: Any, base: str) -> None:
    page = _page(browser, base, "alice.T0ACME")
    page.goto(f"{base}/?ip=198.51.100.1")
    buttons = page.locator("button.open")
    assert buttons.count() == len(XSS)
    for i in range(buttons.count()):
        buttons.nth(i).click()
    page.locator("dl.fields").nth(len(XSS) - 1).wait_for()
    assert page.evaluate("window.__pwned") is None
    texts = page.locator("#events").inner_text()
    for payload in XSS:
        assert payload in texts  # shown, as text
    assert page.locator("#events img, #events svg, #events script").count() == 0
    page.context.close()


def test_a_session_for_one_workspace_sees_nothing_of_another(
    browser: Any, base: str, tenants: Tenants
) -> None:
    page = _page(browser, base, "alice.T0ACME")
    page.goto(f"{base}/")
    globex = str(tenants.globex)
    for path in ("/", "/api/events", "/export"):
        for workspace in (globex, "T0GLOBEX"):
            answer = page.request.get(f"{base}{path}?workspace={workspace}")
            assert answer.status == 404
            assert "globex" not in answer.text().lower()
    status = page.evaluate(
        "url => fetch(url).then(r => r.status)", f"{base}/api/events?workspace={globex}"
    )
    assert status == 404
    assert "globex" not in page.content().lower()
    page.context.close()


def test_the_badge_turns_to_problems_after_a_superuser_edit(
    browser: Any, base: str, viewer: AuditViewer, tenants: Tenants
) -> None:
    page = _page(browser, base, "gina.T0GLOBEX")
    page.goto(f"{base}/")
    viewer.refresh_badges()
    page.reload()
    badge = page.locator("#chain-badge")
    assert badge.text_content().startswith("Chain intact up to ")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "viewer-intact.png", animations="disabled")
    conninfo = make_url(tenants.url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "UPDATE audit_logs SET user_id = 'G9' WHERE id = (SELECT id FROM audit_logs"
            " WHERE workspace_id = %s ORDER BY chain_seq LIMIT 1)",
            (tenants.globex,),
        )
    viewer.refresh_badges()
    page.reload()
    assert "problem" in badge.text_content()
    assert "badge-problems" in (badge.get_attribute("class") or "")
    page.context.close()
