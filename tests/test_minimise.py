"""Less personal data in the first place: truncated IP addresses, no user agents."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditledger import AuditLogger
from auditledger._errors import ConfigurationError
from auditledger._read.verify.run import verify_log
from auditledger._write.prepare import truncated_ip
from tests.helpers import stored


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("2001:db8:abcd:12:34::1", "2001:db8:abcd::"),
        ("::ffff:198.51.100.7", "198.51.100.0"),
        ("fe80::1:2:3:4%eth0", "fe80::"),
        ("10.0.0.0", "10.0.0.0"),
    ],
)
def test_truncation(given: str, kept: str) -> None:
    assert truncated_ip(given) == kept


def test_the_logger_stores_less(db_url: str, spool_dir: Path) -> None:
    with AuditLogger(
        db_url, spool_dir=spool_dir, ip_address="truncated", user_agent="none"
    ) as audit:
        audit.audit_login("U1", None, "203.0.113.77", "Mozilla/5.0")
        audit.audit_login("U2", None, "2001:db8:abcd:12:34::1", "curl/8")
        audit.audit_login("U3", None, "not an address", "curl/8")
        assert audit.flush(10)
    events = {e.user_id: e for e in stored(db_url)}
    assert [(events[u].ip_address, events[u].user_agent) for u in ("U1", "U2", "U3")] == [
        ("203.0.113.0", None),
        ("2001:db8:abcd::", None),
        (None, None),
    ]
    assert verify_log(db_url).ok
    with AuditLogger(db_url, spool_dir=spool_dir) as audit:  # the defaults keep everything
        audit.audit_login("U4", None, "203.0.113.77", "Mozilla/5.0")
        assert audit.flush(10)
    kept = next(e for e in stored(db_url) if e.user_id == "U4")
    assert (kept.ip_address, kept.user_agent) == ("203.0.113.77", "Mozilla/5.0")


def test_what_is_not_an_address_is_not_kept_whole_when_truncating(
    db_url: str, spool_dir: Path
) -> None:
    # A value that is not an IP address is noted in `sanitised`; with the defaults the note
    # quotes it, with ip_address="truncated" it must not (a full address would survive
    # there). Surrounding whitespace (one item of a split X-Forwarded-For) is removed.
    for option in ("truncated", "full"):
        with AuditLogger(db_url, spool_dir=spool_dir, ip_address=option) as audit:
            audit.audit_login(f"U{option}1", None, "10.1.2.3/32", None)
            audit.audit_login(f"U{option}2", None, " 203.0.113.5 ", None)
            assert audit.flush(10)
    events = {e.user_id: e for e in stored(db_url)}
    cut = events["Utruncated1"]
    assert cut.ip_address is None
    assert cut.sanitised == [
        {"field": "ip_address", "change": "not an IP address (not kept: ip_address='truncated')"}
    ]
    assert "10.1.2.3" not in str(cut)
    full = events["Ufull1"]
    assert full.sanitised == [
        {"field": "ip_address", "change": "not an IP address", "original": "10.1.2.3/32"}
    ]
    padded = {u: events[u] for u in ("Utruncated2", "Ufull2")}
    assert [(e.ip_address, e.sanitised) for e in padded.values()] == [
        ("203.0.113.0", [{"field": "ip_address", "change": "surrounding whitespace removed"}]),
        ("203.0.113.5", [{"field": "ip_address", "change": "surrounding whitespace removed"}]),
    ]
    assert verify_log(db_url).ok


@pytest.mark.parametrize(("ip", "agent"), [("hashed", "full"), ("full", "short")])
def test_unknown_choices_fail_at_start_up(ip: str, agent: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="must be"):
        AuditLogger(
            f"sqlite:///{tmp_path / 'x.db'}", spool_dir=tmp_path / "s", ip_address=ip,
            user_agent=agent,
        )  # fmt: skip
