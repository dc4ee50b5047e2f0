"""Who a GDPR request is about: one rule for subject access and erasure, whole ids only.

Each test runs on SQLite and PostgreSQL. A hostile review found that the previous matcher took
the user id as a substring of every column: erasing U0BOB erased U0BOBBY's values, a short id
erased other people's IP addresses, and a blank id was accepted.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from auditledger import AuditLogger, AuditReader, AuditStore, WorkspaceRef
from auditledger._errors import InvalidSubjectId
from auditledger._gdpr.erase import erase_subject
from auditledger._read.verify.run import verify_log
from tests.helpers import cli, stored
from tests.test_gdpr_erasure import _naming

BOB = "U0BOB"
BOBBY = "U0BOBBY"
BOB_IP = "203.0.113.5"
BOB_UA = "Mozilla/5.0 (Bob's laptop)"
BOBBY_IP = "198.51.100.23"
KEY = b"k" * 40


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "subject.key"
    path.write_bytes(KEY)
    return path


def _write(url: str, spool: Path) -> None:
    one = WorkspaceRef("T0NE")
    with AuditLogger(url, spool_dir=spool) as audit:
        audit.audit_login(BOB, one, BOB_IP, BOB_UA)
        audit.audit_login(BOBBY, one, BOBBY_IP, f"agent of {BOB}")  # only Bobby's values
        audit.log_audit_event(
            "admin_action", user_id="U0ADMIN", workspace_id=one, resource="user",
            resource_id=BOBBY, details={"target": BOBBY, "note": f"not {BOB}Y"},
        )  # fmt: skip
        audit.log_audit_event(
            "admin_action", user_id="U0ADMIN", workspace_id=one, resource="user",
            resource_id=BOB, details={"note": "removed from channel"},
        )  # fmt: skip
        audit.log_audit_event(
            "message.sent", user_id="U0ADMIN", workspace_id=one,
            details={"text": f"hi <@{BOB}>, and <@{BOBBY}>", "n": 5},
        )  # fmt: skip
        audit.log_audit_event(
            "message.sent", user_id="U0ADMIN", workspace_id=one,
            details={"text": f"ping {BOBBY}", "to": [f"x{BOB}", f"{BOB}_2", f"{BOB}-2"]},
        )  # fmt: skip
        audit.audit_settings_change(
            "U0ADMIN", one, "admins", previous_value=[BOB, BOBBY], new_value=[BOBBY]
        )
        audit.log_audit_event("message.sent", user_id="U0ADMIN", details={BOB: "a key"})
        # Calls quarantined (invalid action): Bob's own, with his address, and Bobby's.
        audit.log_audit_event("Bad Action", user_id=BOB, ip_address=BOB_IP, user_agent=BOB_UA)
        audit.log_audit_event("Bad Action", user_id=BOBBY, ip_address=BOBBY_IP, details={"a": 1})
        assert audit.flush(20)


def _erase(url: str, user: str = BOB, **kw: Any) -> Any:
    return erase_subject(
        url, user, reason="Art. 17", actor="dpo@example.com", subject_key=KEY, **kw
    )


def _bobby_values(url: str) -> list[tuple[str, Any]]:
    """Everything stored that is Bobby's or merely looks like Bob's id inside a longer one."""
    out: list[tuple[str, Any]] = []
    for e in stored(url):
        if e.action.startswith("gdpr."):
            continue
        out += [(e.action, v) for v in (e.user_id, e.ip_address, e.user_agent, e.resource_id)]
        out += [(e.action, json.dumps(v)) for v in (e.details, e.previous_value, e.new_value)]
    with AuditStore(url) as store:
        out += [("quarantine", json.dumps(q.payload)) for q in store.quarantined(limit=100)]
    return sorted((a, str(v)) for a, v in out if v is not None and BOBBY in str(v))


def test_erasing_an_id_leaves_longer_ids_and_their_values(db_url: str, spool_dir: Path) -> None:
    _write(db_url, spool_dir)
    bobby_before = _bobby_values(db_url)
    assert len(bobby_before) >= 8

    result = _erase(db_url)

    # Bob's login, the admin action about him, the mention, the settings change, the key.
    assert result.events == 5
    assert result.quarantined == 1
    assert _naming(db_url, (BOB_IP, BOB_UA)) == []
    # Bobby keeps everything: his login (whose user agent mentions Bob, but is Bobby's), the
    # admin action naming him, the message naming only him and the look-alikes of Bob's id,
    # his quarantined call.
    events = {(e.action, e.user_id, e.resource_id): e for e in stored(db_url)}
    assert events[("login", BOBBY, BOBBY)].ip_address == BOBBY_IP
    assert events[("login", BOBBY, BOBBY)].user_agent == f"agent of {BOB}"
    assert events[("admin_action", "U0ADMIN", BOBBY)].details == {
        "target": BOBBY, "note": f"not {BOB}Y",
    }  # fmt: skip
    ping = next(e for e in stored(db_url) if e.details and "ping" in str(e.details))
    assert ping.details["to"] == [f"x{BOB}", f"{BOB}_2", f"{BOB}-2"]
    lost = set(bobby_before) - set(_bobby_values(db_url))
    # What goes is only what names Bob too: the mention of both, the settings' old value.
    assert {action for action, _ in lost} == {"message.sent", "settings_changed"}
    assert all(BOB in v.replace(BOBBY, "") for _, v in lost)
    report = verify_log(db_url)
    assert report.ok, report.problems


def test_ip_addresses_and_agents_go_only_where_the_person_is_the_actor(
    db_url: str, spool_dir: Path
) -> None:
    """An id that happens to be part of someone else's IP address or user agent does not
    make those values the person's."""
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        audit.audit_login("100", None, "100.64.0.1", "agent/100")
        audit.audit_login("U0EVE", None, "100.64.0.100", "agent/100 (100)")
        audit.log_audit_event("message.sent", user_id="U0EVE", details={"to": "100"})
        assert audit.flush(10)
    result = _erase(db_url, "100")
    assert result.events == 2
    eve = [e for e in stored(db_url) if e.user_id == "U0EVE"]
    login = next(e for e in eve if e.action == "login")
    assert (login.ip_address, login.user_agent) == ("100.64.0.100", "agent/100 (100)")
    assert next(e for e in eve if e.action == "message.sent").details is None
    assert verify_log(db_url).ok


@pytest.mark.parametrize("user", ["", " ", "   ", "\t", " U0BOB", "U0BOB ", "ab", "1", "U0\n1"])
def test_ids_that_cannot_name_one_person_are_refused(
    db_url: str, spool_dir: Path, key: Path, tmp_path: Path, user: str
) -> None:
    _write(db_url, spool_dir)
    before = len(stored(db_url))
    with pytest.raises(InvalidSubjectId):
        _erase(db_url, user)
    with AuditReader(db_url, actor="dpo") as reader, pytest.raises(InvalidSubjectId):
        reader.subject_events(user, subject_key=KEY)
    out = tmp_path / "out.json"
    common = ["--subject-key", str(key), "--database-url", db_url]
    erase = cli(
        "gdpr", "erase", "--user", user, "--reason", "r", "--actor", "dpo", "--yes", *common
    )
    export = cli("gdpr", "export", "--user", user, "--out", str(out), *common)
    for done in (erase, export):
        assert done.returncode == 2, done.stdout + done.stderr
        assert "user id" in done.stderr
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()
    assert len(stored(db_url)) == before  # nothing erased, nothing recorded


def test_export_is_exactly_what_erasure_changes(
    db_url: str, spool_dir: Path, key: Path, tmp_path: Path
) -> None:
    _write(db_url, spool_dir)
    out = tmp_path / "bob.json"
    done = cli(
        "gdpr", "export", "--user", BOB, "--out", str(out), "--actor", "dpo",
        "--subject-key", str(key), "--database-url", db_url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    exported = {e["id"] for e in data["events"]}
    quarantined = {q["id"] for q in data["quarantined"]}
    assert data["summary"]["quarantined"] == 1
    assert data["quarantined"][0]["payload"]["ip_address"] == BOB_IP

    result = _erase(db_url)
    erasures = [e for e in stored(db_url) if e.action == "gdpr.erasure"]
    erased = {i for e in erasures for i in e.details["events"]}
    assert exported == erased
    assert len(quarantined) == result.quarantined == 1
    with AuditStore(db_url) as store:
        scrubbed = {str(q.id) for q in store.quarantined() if "_erased" in q.payload}
    assert scrubbed == quarantined


def test_the_erasure_event_says_which_columns_of_which_event(db_url: str, spool_dir: Path) -> None:
    _write(db_url, spool_dir)
    before = {str(e.id): e for e in stored(db_url)}
    _erase(db_url)
    erasures = [e for e in stored(db_url) if e.action == "gdpr.erasure"]
    erased: dict[str, list[str]] = {}
    for e in erasures:
        assert sorted(e.details["erased"]) == sorted(e.details["events"])
        erased.update(e.details["erased"])
    by_kind = {(before[i].action, before[i].user_id): cols for i, cols in erased.items()}
    assert by_kind[("login", BOB)] == ["ip_address", "resource_id", "user_agent", "user_id"]
    assert by_kind[("settings_changed", "U0ADMIN")] == ["previous_value"]
    admin = next(i for i, e in before.items() if e.resource_id == BOB)
    assert erased[admin] == ["resource_id"]
    # And exactly those columns are now empty, the others as they were.
    after = {str(e.id): e for e in stored(db_url)}
    columns = ("user_id", "ip_address", "user_agent", "resource_id", "details")
    for event_id, cols in erased.items():
        for name in (*columns, "previous_value", "new_value"):
            value = getattr(after[event_id], name)
            assert (value is None) if name in cols else value == getattr(before[event_id], name)


def test_erasure_removes_the_address_from_quarantined_calls(db_url: str, spool_dir: Path) -> None:
    _write(db_url, spool_dir)
    assert _naming(db_url, (BOB_IP,))
    _erase(db_url)
    assert _naming(db_url, (BOB_IP, BOB_UA)) == []
    with AuditStore(db_url) as store:
        calls = {q.payload.get("user_id"): q.payload for q in store.quarantined()}
    assert calls[None]["_erased"] == ["ip_address", "user_agent", "user_id"]
    assert calls[BOBBY]["ip_address"] == BOBBY_IP
    for _, _, value in _all_text(db_url):
        assert BOB_IP not in value
        assert BOB_UA not in value


def _all_text(url: str) -> list[tuple[str, str, str]]:
    from tests.test_gdpr_erasure import _every_value

    out = []
    for table, column, value in _every_value(url):
        if value is None:
            continue
        if isinstance(value, bytes | memoryview):
            out.append((table, column, bytes(value).decode("latin-1")))
        else:
            out.append(
                (table, column, value if isinstance(value, str) else json.dumps(value, default=str))
            )
    return out


def test_the_export_file_is_private_and_replaced_whole(
    db_url: str, spool_dir: Path, key: Path, tmp_path: Path
) -> None:
    _write(db_url, spool_dir)
    out = tmp_path / "bob.json"
    out.write_text("an older file anyone could read")
    out.chmod(0o644)
    old_umask = os.umask(0o022)
    try:
        done = cli(
            "gdpr", "export", "--user", BOB, "--out", str(out), "--actor", "dpo",
            "--subject-key", str(key), "--database-url", db_url,
        )  # fmt: skip
    finally:
        os.umask(old_umask)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert json.loads(out.read_text())["subject"] == BOB
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".bob")) == []


def test_ids_with_quotes_and_wildcards(db_url: str, spool_dir: Path) -> None:
    """Quoted and escaped correctly in the query (the pattern is inlined on PostgreSQL), and
    LIKE's wildcards in the id match only themselves."""
    odd = "o'brien_%/\\\"x"
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        audit.log_audit_event("message.sent", user_id="U0ADMIN", details={"to": f"<{odd}>"})
        audit.log_audit_event("message.sent", user_id="U0ADMIN", details={"to": "o'brienX%/\\\"x"})
        audit.log_audit_event("message.sent", user_id="U0ADMIN", details={"to": "o'brien_ab/\\\"x"})
        assert audit.flush(10)
    with AuditReader(db_url) as reader:
        found = reader.subject_events(odd, subject_key=KEY)
    assert [e.details for e in found] == [{"to": f"<{odd}>"}]
    assert _erase(db_url, odd).events == 1
    assert verify_log(db_url).ok
