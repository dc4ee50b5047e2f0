"""Credentials are redacted before storage; the library's own logs hold no personal data."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from auditledger import DEFAULT_REDACT_KEYS, AuditLogger, AuditStore
from tests.helpers import stored
from tests.tcp_proxy import TcpProxy

SLACK_TOKEN = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"


def test_credentials_are_redacted_at_any_depth(db_url: str, spool_dir: Path) -> None:
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        audit.log_audit_event(
            "settings_changed",
            details={
                "channel": "C123",
                "headers": {"Authorization": "Basic dXNlcjpwYXNz", "Accept": "json"},
                "integrations": [{"name": "github", "api_key": "ghk-123", "enabled": True}],
                "note": f"rotated to {SLACK_TOKEN} yesterday",
                "session": {"cookie": "sid=abc"},
                "id_token": JWT,
                "description": "harmless text stays",
            },
            previous_value={"client_secret": "old-secret", "plan": "pro"},
            new_value={"password": "hunter2", "webhook": f"Bearer {JWT}"},
        )
        assert audit.flush(30)
    (event,) = stored(db_url)
    d = event.details
    assert d["channel"] == "C123"
    assert d["description"] == "harmless text stays"
    assert d["headers"] == {"Authorization": "[REDACTED]", "Accept": "json"}
    assert d["integrations"] == [{"name": "github", "api_key": "[REDACTED]", "enabled": True}]
    assert d["note"] == "rotated to [REDACTED] yesterday"
    assert d["session"] == {"cookie": "[REDACTED]"}
    assert d["id_token"] == "[REDACTED]"
    assert event.previous_value == {"client_secret": "[REDACTED]", "plan": "pro"}
    assert event.new_value == {"password": "[REDACTED]", "webhook": "[REDACTED]"}
    everything = repr(event)
    for secret in (SLACK_TOKEN, JWT, "hunter2", "old-secret", "ghk-123", "sid=abc", "dXNlcjpwYXNz"):
        assert secret not in everything
    paths = {(n["field"], n["path"]) for n in event.sanitised or []}
    assert ("details", "$.headers.Authorization") in paths
    assert ("new_value", "$.password") in paths


def test_the_denylist_is_configurable(sqlite_url: str, spool_dir: Path) -> None:
    keys = [*DEFAULT_REDACT_KEYS, "ssn"]
    with AuditLogger(sqlite_url, spool_dir=spool_dir, redact_keys=keys) as audit:
        audit.log_audit_event("admin_action", details={"ssn": "078-05-1120", "name": "x"})
        assert audit.flush(30)
    (event,) = stored(sqlite_url)
    assert event.details == {"ssn": "[REDACTED]", "name": "x"}


def test_library_logs_hold_no_personal_data_secrets_or_urls(
    pg_url: str, spool_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = make_url(pg_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        secret_url = url.set(
            host="127.0.0.1", port=proxy.port, username="postgres", password="s3cr3t-pw"
        ).render_as_string(hide_password=False)
        caplog.set_level(logging.DEBUG, logger="auditledger")
        proxy.refuse()
        audit = AuditLogger(secret_url, spool_dir=spool_dir, write_timeout=1.0)
        for i in range(50):
            audit.log_audit_event(
                "login" if i % 2 else "Not An Action",
                user_id="U-PERSONAL",
                ip_address="203.0.113.99",
                user_agent="SecretBrowser/1.0",
                details={"email": "alice@example.com", "password": "hunter2", "x": float("nan")},
            )
        assert audit.flush(1.0) is False
        proxy.restore()
        assert audit.flush(30)
        audit.close()
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert caplog.records, "the outage should have been reported"
    for forbidden in (
        "U-PERSONAL", "203.0.113.99", "SecretBrowser", "alice@example.com", "hunter2",
        "s3cr3t-pw", secret_url, str(proxy.port),
    ):  # fmt: skip
        assert forbidden not in text


def test_a_secret_setting_stores_neither_value(db_url: str, spool_dir: Path) -> None:
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        audit.audit_settings_change("U1", None, "smtp_password", "old-pass", "hunter2")
        audit.audit_settings_change("U1", None, "api_key", None, {"value": "k-123"})
        audit.audit_settings_change("U1", None, "digest_channel", "C1", "C2")
        assert audit.flush(30)
    events = {e.resource_id: e for e in stored(db_url)}
    assert (events["smtp_password"].previous_value, events["smtp_password"].new_value) == (
        "[REDACTED]",
        "[REDACTED]",
    )
    assert (events["api_key"].previous_value, events["api_key"].new_value) == (None, "[REDACTED]")
    assert (events["digest_channel"].previous_value, events["digest_channel"].new_value) == (
        "C1",
        "C2",
    )
    assert "hunter2" not in repr(events)
    assert "k-123" not in repr(events)


def test_the_secret_pre_scan_is_a_superset_of_the_walk_and_not_much_more() -> None:
    from auditledger._write.redact import Redactor

    r = Redactor()
    for secret in (
        '{"a":"xoxb-12345678-abc"}', '{"a":"Bearer abcdefghij"}', '{"a":"BEARER abcdefghij"}',
        '{"a":"AKIAIOSFODNN7EXAMPLE"}', '{"a":"ASIAIOSFODNN7EXAMPLE"}', '{"pass.word":1}',
        '{"a":"https://u:p@host"}', '{"Api-Key":1}', '{"a":"ghp_' + "x" * 36 + '"}',
        '{"a":"xoxe.xoxp-1-abcdefgh"}', '{"a":"xapp-1-A0123456"}', '{"a":"xwfp-abcdefgh"}',
        '{"a":"sk_live_0123456789abcdef"}', '{"a":"eyJhbGciOi.eyJzdWIiOi.c2ln"}',
        '{"api_\u212aey":1}', '{"API_\u212aEY":"x"}', '{"é":"Bearer abcdefghij"}',
        '{"api\\tkey":"x"}', '{"pass\\nword":"x"}', '{"to\\u006ben":"x"}',
    ):  # fmt: skip
        assert r.may_hold_secret(secret), secret
        # ...and each of them is something the walk does redact.
        assert r.redact_json(secret, "details")[1], secret
    # Ordinary text that once looked like a credential to the pre-scan.
    for clean in ('{"timezone":"Asia/Tokyo"}', '{"region":"akiak"}', '{"say":"eyjafjallajokull"}'):
        assert not r.may_hold_secret(clean), clean


def test_a_key_with_a_nul_is_sanitised_then_redacted(db_url: str, spool_dir: Path) -> None:
    # The NUL is replaced in the writer, which changes the key the pre-scan saw ("pass",
    # escape, "word"): the walk must still run, and find "pass\ufffdword" is a password.
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        audit.log_audit_event("login", details={"pass\x00word": "hunter2", "note": "a\x00b"})
        audit.log_audit_event("Not An Action", details={"pass\x00word": "hunter2"})
        assert audit.flush(30)
        assert audit.stats().quarantined == 1
    (event,) = stored(db_url)
    assert event.details == {"pass\ufffdword": "[REDACTED]", "note": "a\ufffdb"}
    changes = {(n["path"], n["change"]) for n in event.sanitised or []}
    assert ("$.note", "NUL characters replaced") in changes
    assert ("$.pass\ufffdword", "redacted (key)") in changes
    assert "hunter2" not in repr(event)
    with AuditStore(db_url) as store:
        (quarantined,) = store.quarantined()
    assert quarantined.payload["details"] == {"pass\ufffdword": "[REDACTED]"}


def test_a_key_spelled_with_an_escape_is_redacted(db_url: str, spool_dir: Path) -> None:
    # In the JSON text the key reads "api\tkey" (backslash, t): the redaction walk decodes it.
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:
        audit.log_audit_event("login", details={"api\tkey": "AbC123xyz", "pass\nword": "hunter2"})
        assert audit.flush(30)
    (event,) = stored(db_url)
    assert event.details == {"api\tkey": "[REDACTED]", "pass\nword": "[REDACTED]"}
