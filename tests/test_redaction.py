"""No value that redaction would remove is written anywhere in clear: rows, quarantine rows,
``sanitised`` notes or spool files, whatever field or shape it comes in."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from auditledger import AuditLogger, WorkspaceRef
from auditledger._db.engine import make_engine
from auditledger._write.prepare import Preparer
from auditledger._write.redact import Redactor
from tests.helpers import stored

SLACK = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy"
GITHUB = "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
PAT = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFG"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
BASIC = "dXNlcjpodW50ZXIy"  # user:hunter2
WEBHOOK = "https://hooks.slack.com/services/T0ABCDEF1/B0ABCDEF2/abcdefghijklmnopqrstuvwx"
PEM_BODY = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw"
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----"
PLANTED = "Pl4nted-S3cret-Value"  # under credential keys only: its shape says nothing
SECRETS = (SLACK, GITHUB, PAT, AWS_SECRET, BASIC, WEBHOOK, PEM_BODY, PLANTED, "hunter2")

Cred = collections.namedtuple("Cred", "user password")


class Account:
    def __init__(self) -> None:
        self.password = PLANTED

    def __repr__(self) -> str:
        return f"Account(name='alice', password='{self.password}')"


def _log_every_shape(audit: AuditLogger) -> None:
    audit.log_audit_event(
        "login",
        user_id=f"U1 {GITHUB}",
        ip_address=f"Bearer {SLACK}",  # not an IP: noted with its original, redacted
        user_agent=f"curl/8 Authorization: Basic {BASIC}",
        resource="user",
        resource_id=PAT,
    )
    audit.log_audit_event("login", user_id="U2", workspace_id=f"ws-{SLACK}")
    hostile_ref = WorkspaceRef("T7", name=Account())  # type: ignore[arg-type]
    audit.log_audit_event("login", user_id="U7", workspace_id=hostile_ref)
    audit.log_audit_event("login", user_id="U8", workspace_id=WorkspaceRef("T8", name=SLACK))
    audit.log_audit_event(
        "admin_action",
        user_id="U3",
        details={
            "cred": Cred("alice", PLANTED),
            "account": Account(),
            "pem": PEM,
            "free": f"rotated key {AWS_SECRET} for the backup job",
            "callback": f"https://app.example/cb?state=1&access_token={PLANTED}",
            "hook": WEBHOOK,
            "header": f"Authorization: Basic {BASIC}",
            "pat": PAT,
        },
    )
    audit.log_audit_event(
        "admin_action",
        user_id="U4",
        details={
            "pwd": PLANTED,
            "pass": PLANTED,
            "auth": PLANTED,
            "creds": PLANTED,
            "otp": PLANTED,
            "\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44": PLANTED,  # full-width letters
            "\u0440\u0430ssword": PLANTED,  # Cyrillic er and a
            "SMTP-Pass": PLANTED,
            "passenger_count": 3,
            "oauth_provider": "google",
        },
    )
    audit.audit_settings_change("U5", None, "SMTP-Pass", "hunter2", PLANTED)
    audit.log_audit_event(f"login {SLACK}", user_id="U6")  # not an action: quarantined


def _everything_stored(url: str) -> str:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = [*conn.execute(text("SELECT * FROM audit_logs")).all()]
            rows += conn.execute(text("SELECT * FROM audit_quarantine")).all()
            rows += conn.execute(text("SELECT * FROM workspaces")).all()
    finally:
        engine.dispose()
    return repr(rows)


def _check_stored(url: str) -> None:
    everything = _everything_stored(url)
    for secret in SECRETS:
        assert secret not in everything, secret
    events = {e.user_id: e for e in stored(url)}
    kept = events["U4"].details
    assert kept["passenger_count"] == 3
    assert kept["oauth_provider"] == "google"
    assert sum(v == "[REDACTED]" for v in kept.values()) == 8
    cred = next(e for e in events.values() if e.details and "cred" in e.details).details["cred"]
    assert cred == {"user": "alice", "password": "[REDACTED]"}
    setting = next(e for e in events.values() if e.resource_id == "SMTP-Pass")
    assert (setting.previous_value, setting.new_value) == ("[REDACTED]", "[REDACTED]")


def test_every_field_and_shape_is_redacted_in_rows_and_quarantine(
    db_url: str, spool_dir: Path
) -> None:
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        _log_every_shape(audit)
        assert audit.flush(30)
        assert audit.stats().quarantined == 1
    _check_stored(db_url)
    (first,) = (e for e in stored(db_url) if e.resource == "user" and e.action == "login")
    notes = {n["field"]: n for n in first.sanitised or []}
    assert notes["ip_address"]["original"] == "[REDACTED]"
    assert first.user_id == "U1 [REDACTED]"


@pytest.mark.parametrize("write_ahead", [True, False])
def test_the_spool_never_holds_a_secret_in_clear(
    write_ahead: bool, db_url: str, spool_dir: Path
) -> None:
    # The database refuses every write (a role it does not know / a file without schema), so
    # every event waits in the spool: the write-ahead copy, the failed batches, and (queue of
    # 3) what callers spill themselves.
    broken = spool_dir.parent / "broken.db"
    url = f"sqlite:///{broken}" if db_url.startswith("sqlite") else db_url + "_no_such_db"
    audit = AuditLogger(
        url, spool_dir=spool_dir, write_ahead=write_ahead, queue_size=3, write_timeout=2.0
    )
    for _ in range(3):
        _log_every_shape(audit)
    audit.close(timeout=3)
    assert audit.stats().spooled > 0
    on_disk = b"".join(p.read_bytes() for p in spool_dir.iterdir())
    assert on_disk
    for secret in SECRETS:
        assert secret.encode() not in on_disk, secret


def test_the_last_resort_quarantine_row_is_redacted(
    db_url: str, spool_dir: Path, monkeypatch: pytest.MonkeyPatch, internal_errors: Any
) -> None:
    # An unforeseen error while preparing: the event is kept as safe representations of its
    # parts. Those parts are redacted too.
    def broken(self: Preparer, event_id: object, ev: object) -> object:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Preparer, "row", broken)
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        _log_every_shape(audit)
        assert audit.flush(30)
    everything = _everything_stored(db_url)
    assert "could not prepare this event" in everything
    for secret in SECRETS:
        assert secret not in everything, secret
    internal_errors.records.clear()


def test_every_new_format_passes_the_cheap_scan_and_is_redacted() -> None:
    r = Redactor()
    for value in (PEM, PAT, f"Basic {BASIC}", WEBHOOK, f"k {AWS_SECRET} k", "?access_token=ab1"):
        data = f'{{"v": "{value}"}}'.replace("\n", "\\n")
        assert r.may_hold_secret(data), value
        assert r.redact_json(data, "details")[1], value
    for key in ("pwd", "Pass", "AUTH", "creds", "otp", "SMTP-Pass", "user.Pwd", "otpCode"):
        assert r.key_is_secret(key), key
    for key in ("passenger", "compass", "oauth_provider", "author", "footprint", "bypassed"):
        assert not r.key_is_secret(key), key
    # Lookalikes that stay: plain words and digests.
    for clean in ("Basic plan", "sha1 2fd4e1c67a2d28fced849ee1bb76e7391b93eb12", "a=b"):
        assert r.redact_text(clean) == (clean, False), clean
