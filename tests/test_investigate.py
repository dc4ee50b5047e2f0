"""The investigation commands as a user runs them: events, export, bundles, verify-bundle."""

from __future__ import annotations

import csv
import hashlib
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from auditledger import AuditReader
from auditledger._chain.checkpoints import generate_keys
from auditledger._read.csvsafe import csv_cells, neutralise
from auditledger._read.rows import SEED_COLUMNS
from tests.bundle_tools import Lines, forge, log_events
from tests.helpers import cli
from tests.test_api import make_workspace


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    generate_keys(tmp_path / "keys")
    return tmp_path / "keys"


def test_events_pages_through_the_cli(db_url: str, spool_dir: Path) -> None:
    log_events(db_url, spool_dir, 7)
    args = ["events", "--database-url", db_url, "--workspace", "T0ACME", "--json"]
    first = cli(*args, "--limit", "4", "--user", "U1", "--ip", "198.51.100.0/24")
    assert first.returncode == 0, first.stderr
    assert [json.loads(x)["user_id"] for x in first.stdout.splitlines()] == ["U1", "U1"]
    assert "next page" not in first.stderr
    page = cli(*args, "--limit", "4", "--since", "1h", "--text", "HYPERLINK")
    assert [json.loads(x)["seq"] for x in page.stdout.splitlines()] == [7, 6, 5, 4]
    cursor = page.stderr.split("--cursor ")[1].split()[0]
    rest = cli(*args, "--limit", "4", "--since", "1h", "--text", "HYPERLINK", "--cursor", cursor)
    assert [json.loads(x)["seq"] for x in rest.stdout.splitlines()] == [3, 2, 1]
    other = cli(*args, "--limit", "4", "--cursor", cursor)
    assert other.returncode == 2
    assert other.stdout == ""
    assert other.stderr.startswith("error: the cursor belongs to other filters")
    table = cli("events", "--database-url", db_url, "--action-prefix", "settings", "--limit", "2")
    assert table.returncode == 0
    assert "settings_changed" in table.stdout
    assert "next page: --cursor" in table.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "--since: 'yesterday' is not a time"),
        (["--until", "2026-13-01"], "--until: '2026-13-01' is not a time"),
        (["--since", "1000000w"], "--since: '1000000w' is too far back"),
        (["--ip", "10.0.0.0/33"], "'10.0.0.0/33' is not an IP address or a CIDR network"),
        (["--cursor", "garbage"], "the cursor is malformed"),
        (["--workspace", "T0NOBODY"], "--workspace: no workspace has the team id 'T0NOBODY'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    sqlite_url: str, tmp_path: Path, args: list[str], message: str
) -> None:
    make_workspace(sqlite_url, "T0X")
    out = tmp_path / "x.jsonl"
    commands = [["events"]]
    if "--cursor" not in args:  # export takes no cursor
        commands.append(["export", "--out", str(out)])
    for command in commands:
        workspace = [] if "--workspace" in args else ["--workspace", "T0X"]
        done = cli(*command, "--database-url", sqlite_url, *workspace, *args)
        assert done.returncode == 2, done.stdout
        assert done.stdout == ""
        assert done.stderr.startswith(f"error: {message}")
        assert len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()
    with AuditReader(sqlite_url) as reader:
        assert list(reader.iter_events()) == []  # nothing recorded either


def test_export_errors_write_nothing(sqlite_url: str, tmp_path: Path, spool_dir: Path) -> None:
    log_events(sqlite_url, spool_dir, 2)
    base = ["export", "--database-url", sqlite_url, "--workspace", "T0ACME"]
    missing_dir = cli(*base, "--out", str(tmp_path / "nope" / "x.jsonl"))
    assert missing_dir.returncode == 2
    assert "the folder" in missing_dir.stderr
    assert "does not exist" in missing_dir.stderr
    both = cli(*base, "--out", "a.jsonl", "--bundle", "b.zip")
    assert both.returncode == 2
    empty_db = tmp_path / "empty.db"
    no_schema = cli(
        "export", "--database-url", f"sqlite:///{empty_db}", "--workspace", "T0ACME",
        "--out", str(tmp_path / "y.jsonl"),
    )  # fmt: skip
    assert no_schema.returncode == 2
    assert no_schema.stderr.startswith("error: no database file at")
    empty_db.touch()
    no_tables = cli(
        "events", "--database-url", f"sqlite:///{empty_db}", "--workspace", "T0ACME",
    )  # fmt: skip
    assert no_tables.returncode == 2
    assert "db upgrade" in no_tables.stderr
    assert "Traceback" not in no_tables.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.db", "empty.db", "spool"]
    with AuditReader(sqlite_url) as reader:
        assert not list(reader.iter_events(action="audit_log.exported"))


def test_export_jsonl_and_csv(db_url: str, spool_dir: Path, tmp_path: Path) -> None:
    log_events(db_url, spool_dir, 5)
    base = ["export", "--database-url", db_url, "--workspace", "T0ACME", "--actor", "alice"]
    done = cli(*base, "--out", str(tmp_path / "e.jsonl"))
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert [x["seq"] for x in lines] == [5, 4, 3, 2, 1]
    assert lines[0]["previous_value"] == {"enabled": False, "n": 4}
    assert lines[0]["new_value"] == {"enabled": True, "n": 1.5}
    assert lines[0]["created_at"].endswith("Z")
    done = cli(*base, "--out", str(tmp_path / "ip.jsonl"), "--ip", "198.51.100.3", "--text", "=HYP")
    assert done.returncode == 0, done.stderr
    only = [json.loads(x) for x in (tmp_path / "ip.jsonl").read_text().splitlines()]
    assert [(x["seq"], x["ip_address"]) for x in only] == [(4, "198.51.100.3")]
    done = cli(*base, "--format", "csv", "--out", str(tmp_path / "e.csv"), "--user", "U1")
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "e.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    assert list(rows[0]) == [
        "id", "user_id", "workspace_id", "ip_address", "user_agent", "action", "resource",
        "resource_id", "details", "previous_value", "new_value", "created_at",
    ]  # fmt: skip
    assert rows[0]["new_value"] == '{"enabled":true,"n":1.5}'
    assert rows[0]["created_at"].endswith("Z")
    with AuditReader(db_url) as reader:
        records = list(reader.iter_events(workspace="T0ACME", action="audit_log.exported"))
    assert [(r.user_id, r.details["format"], r.details["events"]) for r in records] == [
        ("alice", "csv", 2),
        ("alice", "jsonl", 1),
        ("alice", "jsonl", 5),
    ]

    assert (
        records[0].details["sha256"]
        == hashlib.sha256((tmp_path / "e.csv").read_bytes()).hexdigest()
    )
    assert records[0].details["filters"] == {"user_id": "U1"}


def test_csv_cells_that_start_a_formula_are_neutralised(tmp_path: Path) -> None:

    for cell in ("=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "\x00x"):
        assert neutralise(cell) == "'" + cell
    assert neutralise("plain") == "plain"
    record: dict[str, object] = dict.fromkeys(SEED_COLUMNS)
    record.update(user_id="=cmd|' /C calc'!A0", action="login", new_value=-5, details="@x")
    cells = csv_cells(record)
    assert cells[1] == "'=cmd|' /C calc'!A0"
    assert cells[10] == "'-5"
    assert cells[8] == '"@x"'  # a JSON string starts with a quote: no formula
    assert cells[0] == ""


def _bundle(db_url: str, spool_dir: Path, tmp_path: Path, keys: Path, count: int = 8) -> Path:
    log_events(db_url, spool_dir, count)
    out = tmp_path / "bundle.zip"
    done = cli(
        "export", "--database-url", db_url, "--workspace", "T0ACME", "--bundle", str(out),
        "--signing-key", str(keys / "signing.key"), "--actor", "auditor",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def _verify(path: Path, keys: Path) -> tuple[int, dict[str, Any]]:
    done = cli("verify-bundle", str(path), "--public-key", str(keys / "signing.pub"), "--json")
    return done.returncode, json.loads(done.stdout) if done.stdout else {"error": done.stderr}


def test_bundle_verifies_and_names_each_tampering(
    db_url: str, spool_dir: Path, tmp_path: Path, keys: Path
) -> None:
    bundle = _bundle(db_url, spool_dir, tmp_path, keys)
    code, report = _verify(bundle, keys)
    assert code == 0, report
    assert report["events"] == 8
    assert report["covered_to"] == 8
    assert report["notes"] == []
    with zipfile.ZipFile(bundle) as zf:
        ids = [json.loads(x)["id"] for x in zf.read("events.jsonl").splitlines()]
        names = sorted(zf.namelist())
    assert names[:2] == ["checkpoints.jsonl", "events.jsonl"]
    assert names[2].startswith("keys/")
    assert names[3:] == ["manifest.json"]

    def problems(change: Callable[[Lines], Lines], fix_sums: bool = True) -> list[Any]:
        forged = tmp_path / "forged.zip"
        forge(bundle, forged, change, fix_sums=fix_sums)
        code, report = _verify(forged, keys)
        assert code == 1, report
        return [(p["kind"], p["event_id"], p["seq"]) for p in report["problems"]]

    def changed(lines: Lines) -> Lines:
        lines[2]["ip_address"] = "203.0.113.9"
        return lines

    assert ("modified", ids[2], 3) in problems(changed)
    assert ("modified", None, None) in problems(changed, fix_sums=False)  # the file's sum

    def removed(lines: Lines) -> Lines:
        return lines[:3] + lines[4:]

    assert [p[0] for p in problems(removed)] == ["missing"]
    assert problems(removed)[0][1:] == (ids[4], 5)

    def added(lines: Lines) -> Lines:
        return [*lines[:5], dict(lines[5], id=forged_id), *lines[5:]]

    forged_id = "01a23db9-0000-7000-8000-000000000000"
    # Which of two events at one position is genuine, only the content can say: the forged
    # one's columns no longer match what was hashed; the other is the second at position 6.
    found = problems(added)
    assert ("modified", forged_id, 6) in found
    assert ("inserted", ids[5], 6) in found

    def reordered(lines: Lines) -> Lines:
        lines[3], lines[4] = lines[4], lines[3]
        return lines

    assert ("reordered", ids[3], 4) in problems(reordered)

    def truncated(lines: Lines) -> Lines:
        return lines[:-2]

    kinds = [p[0] for p in problems(truncated)]
    assert "truncated" in kinds or "missing" in kinds


def test_verify_bundle_cannot_run(tmp_path: Path, keys: Path) -> None:
    not_zip = tmp_path / "x.zip"
    not_zip.write_text("hello")
    done = cli("verify-bundle", str(not_zip))
    assert done.returncode == 2
    assert "is not a ZIP file" in done.stderr
    lacking = tmp_path / "lacking.zip"
    with zipfile.ZipFile(lacking, "w") as zf:
        zf.writestr("events.jsonl", "")
    done = cli("verify-bundle", str(lacking))
    assert done.returncode == 2
    assert "lacks manifest.json" in done.stderr
