"""The viewer over real rows: what each route shows, to whom, and the record of each look."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from auditledger import AuditLogger, AuditStore, WorkspaceRef
from auditledger._viewer.records import diff
from auditledger.web import AuditViewer
from tests.viewer_helpers import XSS, Client, Tenants, seed, viewer_over

ALICE = {"x-test-user": "alice:T0ACME"}
GINA = {"x-test-user": "gina:T0GLOBEX"}


@pytest.fixture
def tenants(db_url: str, tmp_path: Path) -> Tenants:
    return seed(db_url, tmp_path / "seed-spool")


@pytest.fixture
def viewer(tenants: Tenants, tmp_path: Path) -> Iterator[AuditViewer]:
    with viewer_over(tenants.url, tmp_path / "viewer-spool") as v:
        yield v


@pytest.fixture
def client(viewer: AuditViewer) -> Iterator[Client]:
    with Client(viewer) as c:
        yield c


def test_the_page_shows_the_workspace_with_strict_headers(client: Client, tenants: Tenants) -> None:
    page = client.get("/", headers=ALICE)
    assert page.status_code == 200
    assert "sso_required" in page.text
    assert "globex" not in page.text.lower()
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    # No inline script or style anywhere, so the CSP costs the page nothing.
    assert re.search(r"<script(?![^>]*\bsrc=)", page.text) is None
    assert " style=" not in page.text
    assert " on" not in re.sub(r">[^<]*<", "><", page.text)
    assert (
        client.get("/static/viewer.js", headers=ALICE)
        .headers["content-type"]
        .startswith("text/javascript")
    )


def test_hostile_values_are_escaped_text(client: Client) -> None:
    page = client.get("/", headers=ALICE, params={"action_prefix": ""}).text
    for payload in XSS:
        if "<" in payload or '"' in payload:
            assert payload not in page  # raw, it would be markup
    assert 'href="javascript' not in page.lower()  # stored values never become links
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page
    # In the API the values come back exactly as stored (JSON is not HTML).
    body = client.get("/api/events", headers=ALICE, params={"limit": 100}).json()
    users = {e["user_id"] for e in body["events"]}
    assert set(XSS) <= users


def test_another_tenant_is_404_on_every_route(client: Client, tenants: Tenants) -> None:
    globex = str(tenants.globex)
    gina_page = client.get("/api/events", headers=GINA, params={"workspace": "T0GLOBEX"}).json()
    globex_event = gina_page["events"][0]["id"]
    gina_cursor = client.get(
        "/api/events", headers=GINA, params={"limit": 2, "workspace": globex}
    ).json()["next_cursor"]
    assert gina_cursor
    unknown = "00000000-0000-0000-0000-0000000000aa"
    for workspace in (globex, "T0GLOBEX", unknown, "T0NOSUCH"):
        for path in ("/", "/api/events", "/export"):
            answer = client.get(path, headers=ALICE, params={"workspace": workspace})
            assert answer.status_code == 404, (path, workspace)
            assert "globex" not in answer.text.lower()
            assert globex not in answer.text
    # The same body for another tenant's workspace as for one that does not exist.
    assert (
        client.get("/", headers=ALICE, params={"workspace": globex}).text
        == client.get("/", headers=ALICE, params={"workspace": unknown}).text
    )
    # Gina's cursor, even with Alice's own workspace.
    for params in ({"cursor": gina_cursor}, {"cursor": gina_cursor, "workspace": "T0ACME"}):
        assert client.get("/api/events", headers=ALICE, params=params).status_code == 404
        assert client.get("/", headers=ALICE, params=params).status_code == 404
    # Gina's event, asked for by id.
    for params in ({}, {"workspace": "T0ACME"}, {"workspace": globex}):
        answer = client.get(f"/api/events/{globex_event}", headers=ALICE, params=params)
        assert answer.status_code == 404
    # A prefix of the id is not the id: no guessing workspaces by their first characters.
    prefix = tenants.acme.hex[:8]
    assert client.get("/", headers=ALICE, params={"workspace": prefix}).status_code == 404


def test_refused_and_unknown_callers(client: Client) -> None:
    assert client.get("/").status_code == 403  # authorize returned None
    assert client.get("/api/events").status_code == 403
    answer = client.get("/api/events", headers={"authorization": "Bearer alt_nope"})
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    # A granted workspace that never logged anything: an empty page, not an error.
    empty = client.get("/", headers={"x-test-user": "nobody:T0NOSUCH"})
    assert empty.status_code == 404


def test_filters_and_bad_filters(client: Client) -> None:
    body = client.get(
        "/api/events", headers=ALICE, params={"user_id": "U1", "ip": "10.0.0.0/24"}
    ).json()
    assert body["events"]
    assert {e["user_id"] for e in body["events"]} == {"U1"}
    assert all(e["created_at"].endswith("Z") for e in body["events"])
    assert set(body["events"][0]) == {
        "id", "user_id", "workspace_id", "ip_address", "user_agent", "action", "resource",
        "resource_id", "details", "previous_value", "new_value", "created_at",
    }  # fmt: skip
    for bad in ({"ip": "10.0.0.0/99"}, {"since": "yesterday-ish"}, {"limit": "0"}):
        answer = client.get("/api/events", headers=ALICE, params=bad)
        assert answer.status_code == 400, bad
        page = client.get("/", headers=ALICE, params=bad)
        assert page.status_code == 400
        assert 'role="alert"' in page.text


def test_paging_the_page_forward_and_back(client: Client) -> None:
    seen: list[list[str]] = []
    url: str | None = "/?limit=10&action=login"  # views append events: the newest page moves
    while url is not None:
        page = client.get(url, headers=ALICE)
        seen.append(re.findall(r'<tr class="event" data-id="([^"]+)"', page.text))
        older = re.search(r'<a rel="next" href="([^"]+)"', page.text)
        last = url
        url = older.group(1).replace("&amp;", "&") if older else None
    assert [len(ids) for ids in seen] == [10, 10, 10]
    assert len({i for ids in seen for i in ids}) == 30  # no repeats across pages
    # Back from the last page: the second, then the first, which has nothing newer.
    url = last
    for expected in reversed(seen[:-1]):
        page = client.get(url, headers=ALICE)
        newer = re.search(r'<a rel="prev" href="([^"]+)"', page.text)
        assert newer
        url = newer.group(1).replace("&amp;", "&")
        page = client.get(url, headers=ALICE)
        assert re.findall(r'<tr class="event" data-id="([^"]+)"', page.text) == expected
    assert '<a rel="prev"' not in page.text


def test_following_the_cursor_delivers_every_event_once(
    client: Client, tenants: Tenants, tmp_path: Path
) -> None:
    got: list[str] = []
    cursor = None
    for round_ in range(2):
        while True:
            params = {"oldest_first": "true", "limit": "7"}
            if cursor:
                params["cursor"] = cursor
            body = client.get("/api/events", headers=ALICE, params=params).json()
            cursor = body["next_cursor"]
            assert cursor  # oldest first always gives a cursor to resume from
            if not body["events"]:
                break
            got += [e["id"] for e in body["events"]]
        if round_ == 0:  # more events arrive; the same cursor picks them up, once
            with AuditLogger(tenants.url, spool_dir=tmp_path / "more") as audit:
                for i in range(9):
                    audit.audit_logout(f"U{i}", WorkspaceRef("T0ACME"))
    with AuditStore(tenants.url) as store:
        stored = store.events(workspace_id=tenants.acme, limit=1000)
    expected = {str(e.id) for e in stored if e.action != "audit_log.viewed"}
    assert len(got) == len(set(got))
    assert expected <= set(got)


def test_a_record_opens_with_its_diff(client: Client) -> None:
    page = client.get("/api/events", headers=ALICE, params={"action": "settings_changed"})
    event = page.json()["events"][0]
    record = client.get(f"/api/events/{event['id']}", headers=ALICE).json()
    assert record["event"]["id"] == event["id"]
    assert record["diff"] == [
        {"path": "sso_required", "change": "changed", "previous": "false", "new": "true"}
    ]


def test_diff_shows_only_what_changed() -> None:
    assert diff(None, None) == []
    assert diff({"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}, "d": None}) == [
        {"path": "b.c", "change": "changed", "previous": "2", "new": "3"},
        {"path": "d", "change": "added", "previous": "", "new": "null"},
    ]
    assert diff("old", "new") == [
        {"path": "", "change": "changed", "previous": '"old"', "new": '"new"'}
    ]


def test_every_look_is_recorded_in_the_workspace_chain(
    client: Client, viewer: AuditViewer, tenants: Tenants
) -> None:
    client.get("/", headers=ALICE, params={"user_id": "U1"})
    body = client.get("/api/events", headers=ALICE, params={"limit": 3}).json()
    client.get(f"/api/events/{body['events'][0]['id']}", headers=ALICE)
    assert viewer.flush()
    with AuditStore(tenants.url) as store:
        views = store.events(workspace_id=tenants.acme, action="audit_log.viewed")
        assert not store.events(workspace_id=tenants.globex, action="audit_log.viewed")
    vias = sorted(v.details["via"] for v in views)
    assert vias == ["api", "page", "record"]
    assert {(v.user_id, v.resource) for v in views} == {("alice", "audit_log")}
    page_view = next(v for v in views if v.details["via"] == "page")
    assert page_view.details["filters"] == {"user_id": "U1"}
    assert page_view.details["events"] == 10


def test_exports_are_exactly_the_filtered_events_and_recorded(
    client: Client, viewer: AuditViewer, tenants: Tenants
) -> None:
    params = {"user_id": "U2", "format": "jsonl"}
    jsonl = client.get("/export", headers=ALICE, params=params)
    assert jsonl.status_code == 200
    assert "attachment" in jsonl.headers["content-disposition"]
    rows = [orjson.loads(line) for line in jsonl.content.splitlines()]
    assert len(rows) == 10
    assert {r["user_id"] for r in rows} == {"U2"}
    hostile = client.get("/export", headers=ALICE, params={"format": "csv", "ip": "198.51.100.1"})
    table = list(csv.reader(io.StringIO(hostile.text)))
    assert table[0][:3] == ["id", "user_id", "workspace_id"]
    assert len(table) == 1 + len(XSS)
    # A cell that a spreadsheet would run as a formula is neutralised in the CSV.
    assert all(not cell.startswith(("=", "+", "-", "@")) for row in table for cell in row)
    bundle = client.get("/export", headers=ALICE, params={"format": "bundle"})
    assert bundle.status_code == 200
    assert bundle.content.startswith(b"PK")
    refused = client.get("/export", headers=ALICE, params={"format": "bundle", "user_id": "U2"})
    assert refused.status_code == 400
    assert "only since and until" in refused.text
    assert viewer.flush()
    with AuditStore(tenants.url) as store:
        exports = store.events(workspace_id=tenants.acme, action="audit_log.exported")
    by_format = {e.details["format"]: e.details for e in exports}
    assert by_format["jsonl"]["events"] == 10
    assert by_format["jsonl"]["sha256"] == hashlib.sha256(jsonl.content).hexdigest()
    assert by_format["jsonl"]["complete"] is True
    assert by_format["csv"]["filters"] == {"ip": "198.51.100.1"}
    assert by_format["bundle"]["sha256"] == hashlib.sha256(bundle.content).hexdigest()
    assert {e.user_id for e in exports} == {"alice"}


def test_several_workspaces_get_a_picker(client: Client) -> None:
    both = {"x-test-user": "auditor:T0ACME,T0GLOBEX"}
    page = client.get("/", headers=both)
    assert '<select id="f-workspace" name="workspace">' in page.text
    globex = client.get("/", headers=both, params={"workspace": "T0GLOBEX"})
    assert "globex.secret_project" in globex.text
    # The API wants to be told which one.
    assert client.get("/api/events", headers=both).status_code == 400
    assert json.loads(client.get("/api/events", headers=both).text)["error"].startswith("workspace")


def test_a_download_in_progress_never_blocks_the_writer(db_url: str, tmp_path: Path) -> None:
    from auditledger._viewer.exports import export_stream
    from auditledger._viewer.filters import Filters

    tenants = seed(db_url, tmp_path / "seed", acme_events=1200)
    recorded: list[dict[str, object]] = []
    with viewer_over(db_url, tmp_path / "viewer-spool") as viewer:
        chunks = export_stream(
            viewer.reader, tenants.acme, Filters(), "jsonl", recorded.append, "t"
        )
        first = next(chunks)  # paused mid-stream: its read is open on the database
        with AuditLogger(db_url, spool_dir=tmp_path / "writer", write_timeout=5) as audit:
            for i in range(20):
                audit.audit_login(f"W{i}", WorkspaceRef("T0ACME"))
            assert audit.flush(timeout=10)
            assert audit.stats().spooled == 0  # stored, not spooled around a lock
        rest = b"".join(chunks)
    lines = (first + rest).splitlines()
    # The reader had fetched its chunk (up to 2,000 rows) before the writes: exactly the seed.
    assert len(lines) == 1200 + 1 + len(XSS)
    assert recorded[0]["events"] == len(lines)
    assert recorded[0]["complete"] is True
