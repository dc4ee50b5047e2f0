"""Retention on real databases: a signed cut first, then the expired prefix deleted in
batches; verify starts each chain at its cut, and the triggers allow nothing else."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from auditledger import AuditLogger, WorkspaceRef
from auditledger._chain.checkpoints import Signer, generate_keys
from auditledger._gdpr.retention import RetentionError, apply_retention, policies, set_policy
from auditledger._read.verify.report import VerifyReport
from auditledger._read.verify.run import verify_log
from tests.children import child
from tests.helpers import cli, stored
from tests.verify_split import assert_same_when_cut


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    generate_keys(tmp_path / "keys")
    return tmp_path / "keys"


def _log(url: str, spool: Path, count: int, *, tag: str) -> None:
    with AuditLogger(url, spool_dir=spool) as audit:
        for i in range(count):
            audit.log_audit_event(
                "admin_action", user_id=f"U{tag}{i}", workspace_id=WorkspaceRef("T0NE"),
                details={"i": i},
            )  # fmt: skip
            if i % 5 == 0:
                audit.log_audit_event("message.sent", user_id=f"U{tag}{i}")
        audit.log_audit_event("Not Valid!", user_id=f"U{tag}")  # quarantined
        assert audit.flush(20)


def _verify(url: str, keys: Path) -> VerifyReport:
    if url.startswith("postgresql"):
        # Four processes with the chains cut into ranges of 7 positions, some starting at or
        # below a cut, find what one walk finds.
        return assert_same_when_cut(url, 7, public_keys=[keys / "signing.pub"])
    return verify_log(url, public_keys=[keys / "signing.pub"])


def _old_then_new(url: str, spool: Path) -> datetime:
    _log(url, spool, 50, tag="old")
    middle = datetime.now(UTC)
    _log(url, spool, 20, tag="new")
    return middle


def test_apply_deletes_the_prefix_under_a_signed_cut(
    db_url: str, spool_dir: Path, keys: Path
) -> None:
    middle = _old_then_new(db_url, spool_dir)
    assert _verify(db_url, keys).ok
    signer = Signer.from_file(keys / "signing.key")

    planned = apply_retention(db_url, signer=None, before=middle, dry_run=True)
    assert sorted(c.count for c in planned.chains) == [10, 50]
    assert len(stored(db_url)) == 84

    result = apply_retention(db_url, signer=signer, before=middle, actor="ops", batch=7)
    assert result.deleted == 60
    assert result.quarantine_deleted == 1
    assert sorted(c.first_kept for c in result.chains) == [11, 51]
    left = stored(db_url)
    assert all(e.user_id is None or not e.user_id.startswith("Uold") for e in left)
    assert len([e for e in left if e.action != "retention.applied"]) == 24
    applied = [e for e in left if e.action == "retention.applied"]
    assert len(applied) == 2
    assert {e.details["count"] for e in applied} == {10, 50}
    assert {e.user_id for e in applied} == {"ops"}

    report = _verify(db_url, keys)
    assert report.ok, report.problems
    assert report.cuts == 3  # two chains and the quarantine
    assert any("starts at position 51" in n for n in report.notes)
    assert any("starts at position 11" in n for n in report.notes)

    # Nothing more has expired; a later cut moves the start again.
    assert apply_retention(db_url, signer=signer, before=middle).chains == []
    assert _verify(db_url, keys).ok


def test_policies_and_the_default(db_url: str, spool_dir: Path, keys: Path) -> None:
    middle = _old_then_new(db_url, spool_dir)
    set_policy(db_url, 30)
    set_policy(db_url, 1)  # replaces the default
    assert [(s, d) for s, d, _ in policies(db_url)] == [("default", 1)]
    with pytest.raises(RetentionError):
        set_policy(db_url, 0)
    signer = Signer.from_file(keys / "signing.key")
    # One day after the middle, exactly the old events are past a one-day period.
    result = apply_retention(db_url, signer=signer, now=middle + timedelta(days=1))
    assert result.deleted == 60
    assert {c.scope for c in result.chains} == {"default"}
    assert _verify(db_url, keys).ok


def _execute(url: str, sql: str) -> None:
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            conn.execute(sql)
        finally:
            conn.close()
        return
    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute(sql)


def _refused(url: str) -> type[Exception]:
    if url.startswith("sqlite"):
        return sqlite3.IntegrityError
    return psycopg.errors.InsufficientPrivilege


def test_the_owner_may_only_delete_below_a_cut(db_url: str, spool_dir: Path, keys: Path) -> None:
    middle = _old_then_new(db_url, spool_dir)
    for sql in (
        "DELETE FROM audit_logs WHERE chain_seq = 1",
        "DELETE FROM audit_logs",
        "DELETE FROM audit_quarantine",
    ):
        with pytest.raises(_refused(db_url), match="append-only"):
            _execute(db_url, sql)
    signer = Signer.from_file(keys / "signing.key")
    apply_retention(db_url, signer=signer, before=middle)
    # Above the cut, still refused.
    with pytest.raises(_refused(db_url), match="append-only"):
        _execute(db_url, "DELETE FROM audit_logs WHERE action = 'admin_action'")
    for sql in ("UPDATE audit_cuts SET first_seq = 1", "DELETE FROM audit_cuts"):
        with pytest.raises(_refused(db_url), match="append-only"):
            _execute(db_url, sql)
    assert _verify(db_url, keys).ok


def test_a_deletion_without_a_cut_is_still_missing(
    db_url: str, spool_dir: Path, keys: Path
) -> None:
    middle = _old_then_new(db_url, spool_dir)
    apply_retention(db_url, signer=Signer.from_file(keys / "signing.key"), before=middle)
    # A superuser deletes kept events, bypassing the triggers.
    if db_url.startswith("sqlite"):
        conn = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("DROP TRIGGER audit_logs_prefix_only")
        conn.execute("DELETE FROM audit_logs WHERE chain_seq IN (51, 52) AND details IS NOT NULL")
        conn.close()
    else:
        with psycopg.connect(db_url, autocommit=True) as pg:
            pg.execute("SET session_replication_role = replica")
            pg.execute("DELETE FROM audit_logs WHERE chain_seq IN (51, 52) AND details IS NOT NULL")
    report = _verify(db_url, keys)
    assert not report.ok
    assert [p.kind for p in report.problems] == ["missing"]
    assert "51-52" in report.problems[0].detail


def test_a_forged_cut_is_refused_and_the_events_are_missing(
    db_url: str, spool_dir: Path, keys: Path, tmp_path: Path
) -> None:
    middle = _old_then_new(db_url, spool_dir)
    generate_keys(tmp_path / "other")
    forger = Signer.from_file(tmp_path / "other" / "signing.key")
    apply_retention(db_url, signer=forger, before=middle)
    report = _verify(db_url, keys)
    kinds = [p.kind for p in report.problems]
    assert kinds.count("bad_signature") == 3
    assert kinds.count("missing") == 2  # both chains' prefixes


def test_verify_after_retention_while_another_process_writes(
    db_url: str, spool_dir: Path, keys: Path, tmp_path: Path
) -> None:
    middle = _old_then_new(db_url, spool_dir)
    writer = child(
        """
import sys
from auditledger import AuditLogger, WorkspaceRef
with AuditLogger(sys.argv[1], spool_dir=sys.argv[2], batch_size=20) as audit:
    for i in range(400):
        audit.log_audit_event("admin_action", user_id="Uw", workspace_id=WorkspaceRef("T0NE"))
        if i % 20 == 19 and not audit.flush(30):
            sys.exit("flush timed out")
    if not audit.flush(30):
        sys.exit("flush timed out")
""",
        db_url,
        str(tmp_path / "spool2"),
    )
    signer = Signer.from_file(keys / "signing.key")
    result = apply_retention(db_url, signer=signer, before=middle, batch=5)
    assert result.deleted == 60
    assert _verify(db_url, keys).ok
    _, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    report = _verify(db_url, keys)
    assert report.ok, report.problems
    assert report.events == 24 + 2 + 400


def test_cli_retention(db_url: str, spool_dir: Path, keys: Path) -> None:
    middle = _old_then_new(db_url, spool_dir)
    base = ["--database-url", db_url]
    assert cli("retention", "show", *base).stdout.startswith("no retention period")
    bad = cli("retention", "set", "--days", "30", *base)
    assert bad.returncode == 2
    assert "--default" in bad.stderr
    assert cli("retention", "set", "--default", "--days", "400", *base).returncode == 0
    shown = cli("retention", "show", *base)
    assert "default" in shown.stdout
    assert "400" in shown.stdout
    unsigned = cli("retention", "apply", "--before", middle.isoformat(), *base)
    assert unsigned.returncode == 2
    assert "signing key" in unsigned.stderr
    dry = cli("retention", "apply", "--before", middle.isoformat(), "--dry-run", "--json", *base)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["deleted"] == 0
    done = cli(
        "retention", "apply", "--before", middle.isoformat(), "--signing-key",
        str(keys / "signing.key"), "--actor", "ops", *base,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "deleted 50 event(s) before position 51" in done.stdout
    verified = cli("verify", "--public-key", str(keys / "signing.pub"), *base)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "starts at position 51" in verified.stderr


def test_cli_before_takes_every_form_its_help_names(db_url: str, spool_dir: Path) -> None:
    """`--before 90d ago`, as --help spells it, is `--before 90d`: the parser `events --since`
    uses. Anything else is one line and exit 2, never a traceback."""
    _log(db_url, spool_dir, 3, tag="x")
    base = ["retention", "apply", "--dry-run", "--json", "--database-url", db_url]
    for before, back in (
        ("90d ago", timedelta(days=90)),
        ("90d", timedelta(days=90)),
        ("12h ago", timedelta(hours=12)),
        ("30 min ago", timedelta(minutes=30)),
        ("2w  ago ", timedelta(weeks=2)),
        ("2020-01-01", None),
        ("2020-01-01T09:30Z", None),
    ):
        asked = datetime.now(UTC)
        done = cli(*base, "--before", before)
        assert done.returncode == 0, (before, done.stderr)
        cut = datetime.fromisoformat(json.loads(done.stdout)["quarantine_before"])
        if back is not None:
            assert asked - back <= cut <= datetime.now(UTC) - back, before
    for before in ("90 days ago", "ago", "90d ago ago", "yesterday", "99999999999999d ago"):
        refused = cli(*base, "--before", before)
        assert refused.returncode == 2, before
        assert refused.stdout == ""
        assert refused.stderr.startswith(f"error: --before: {before!r}"), refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    shown = cli("retention", "apply", "--help", env={**os.environ, "COLUMNS": "300"})
    assert "naive is UTC) or a span back from now: 90d or 90d ago" in shown.stdout
    hours = [
        cli("events", "--since", s, "--json", "--database-url", db_url) for s in ("1h", "1h ago")
    ]
    assert hours[0].returncode == 0, hours[0].stderr
    assert hours[1].stdout == hours[0].stdout != ""


def test_an_interrupted_apply_verifies_and_a_second_run_finishes(
    db_url: str, spool_dir: Path, keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from auditledger._gdpr import retention

    middle = _old_then_new(db_url, spool_dir)
    signer = Signer.from_file(keys / "signing.key")
    original = retention._delete_prefix
    calls: list[int] = []

    def stops_after_one_chain(*args: Any, **kwargs: Any) -> int:
        if calls:
            raise ConnectionError("the operator's session died")
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(retention, "_delete_prefix", stops_after_one_chain)
    with pytest.raises(ConnectionError):
        apply_retention(db_url, signer=signer, before=middle, batch=7)
    report = _verify(db_url, keys)  # cuts recorded, one prefix still there: still intact
    assert report.ok, report.problems
    monkeypatch.setattr(retention, "_delete_prefix", original)
    again = apply_retention(db_url, signer=signer, before=middle)
    assert [c.needs_cut for c in again.chains] == [False]
    assert again.events == []  # the cut and its record were made by the first run
    assert len([e for e in stored(db_url) if e.action != "retention.applied"]) == 24
    assert _verify(db_url, keys).ok


def test_erasure_then_retention(db_url: str, spool_dir: Path, keys: Path) -> None:
    from auditledger._gdpr.erase import erase_subject

    middle = _old_then_new(db_url, spool_dir)
    erased = erase_subject(db_url, "Unew5", reason="request", actor="dpo", subject_key=b"s" * 32)
    assert erased.events == 2  # its admin_action and its message.sent
    assert _verify(db_url, keys).erased == 2
    apply_retention(db_url, signer=Signer.from_file(keys / "signing.key"), before=middle)
    report = _verify(db_url, keys)
    assert report.ok, report.problems
    assert report.erased == 2
