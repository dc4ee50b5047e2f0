"""Subject access (GDPR Art. 15): every event about one person, recorded as a read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from auditledger import AuditLogger, AuditReader
from auditledger._gdpr.subject import subject_hash
from auditledger._read.verify.run import verify_log
from tests.helpers import cli, stored
from tests.test_gdpr_erasure import OTHER, SUBJECT, _erase, _write

KEY = b"k" * 40


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "subject.key"
    path.write_bytes(KEY)
    return path


def test_subject_events_find_actor_subject_and_mentions(db_url: str, spool_dir: Path) -> None:
    _write(db_url, spool_dir)
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        # Another person whose id differs only in case: not the subject.
        audit.log_audit_event("message.sent", user_id=OTHER, details={"to": SUBJECT.lower()})
        assert audit.flush(10)
    with AuditReader(db_url, actor="dpo") as reader:
        events = reader.subject_events(SUBJECT, subject_key=KEY)
        ones = reader.subject_events(SUBJECT, "T0TWO", subject_key=KEY)
    assert sorted(e.action for e in events) == [
        "admin_action", "login", "login", "message.sent", "settings_changed",
    ]  # fmt: skip
    assert [e.created_at for e in events] == sorted(e.created_at for e in events)
    assert [e.action for e in ones] == ["message.sent"]
    records = [e for e in stored(db_url) if e.action == "gdpr.subject_export"]
    assert sorted(r.details["events"] for r in records) == [1, 5]
    assert {r.details["subject"] for r in records} == {subject_hash(KEY, SUBJECT)}
    assert {r.user_id for r in records} == {"dpo"}
    assert verify_log(db_url).ok


def test_cli_export_then_erase(db_url: str, spool_dir: Path, tmp_path: Path, key: Path) -> None:
    _write(db_url, spool_dir)
    out = tmp_path / "subject.json"
    done = cli(
        "gdpr", "export", "--user", SUBJECT, "--out", str(out), "--actor", "dpo",
        "--subject-key", str(key), "--database-url", db_url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "5 event(s) and 1 quarantined call(s) written" in done.stdout
    data = json.loads(out.read_text())
    assert data["summary"]["events"] == 5
    assert data["summary"]["as_actor"] == 2
    assert data["summary"]["by_action"]["login"] == 2
    assert all(e["created_at"].endswith("Z") for e in data["events"])
    no_key = cli("gdpr", "export", "--user", SUBJECT, "--out", str(out), "--database-url", db_url)
    assert no_key.returncode == 2
    assert "subject key" in no_key.stderr

    _erase(db_url, key)
    with AuditReader(db_url) as reader:
        assert reader.subject_events(SUBJECT, subject_key=KEY) == []
    assert verify_log(db_url).ok


def test_a_public_key_is_refused_as_the_subject_key(tmp_path: Path) -> None:
    from auditledger._chain.checkpoints import generate_keys
    from auditledger._errors import ConfigurationError
    from auditledger._gdpr.subject import load_subject_key

    generate_keys(tmp_path)
    assert len(load_subject_key(tmp_path / "signing.key")) >= 32
    with pytest.raises(ConfigurationError, match="public key"):
        load_subject_key(tmp_path / "signing.pub")
    ssh = tmp_path / "id.pub"
    ssh.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBcdefghijklmnopqrstuvwxyz0123 me@host\n")
    with pytest.raises(ConfigurationError, match="public key"):
        load_subject_key(ssh)


def test_cli_export_records_who_asked(
    db_url: str, spool_dir: Path, tmp_path: Path, key: Path
) -> None:
    # Without --actor the record names the login name, as `auditledger export` does: the
    # record of a subject access exists to say who asked.
    import getpass

    _write(db_url, spool_dir)
    out = tmp_path / "subject.json"
    done = cli(
        "gdpr", "export", "--user", SUBJECT, "--out", str(out), "--subject-key", str(key),
        "--database-url", db_url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (record,) = [e for e in stored(db_url) if e.action == "gdpr.subject_export"]
    assert record.user_id == getpass.getuser()
    assert record.details["events"] == 5
