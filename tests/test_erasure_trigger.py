"""The UPDATE trigger of audit_logs (migration 0008): for an event in canonical form 2, the
owner may set a committed value to NULL only together with zeroing its own salt slot, and
nothing else; erasure through the library still works and verifies."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command

from auditledger import AuditLogger, WorkspaceRef
from auditledger._chain.checkpoints import generate_keys
from auditledger._chain.v2 import erased_salt, parse, slots
from auditledger._db.engine import make_engine
from auditledger._db.migrate import alembic_config
from auditledger._gdpr.erase import erase_subject
from auditledger._read.verify.run import verify_log
from tests.helpers import cli, erase_by_hand, row_id, run_sql, stored

SUBJECT = "U0SUBJ3CT9"
SUBJECT_IP = "203.0.113.77"
SUBJECT_UA = "Mozilla/5.0 (subject's phone)"


def _write(url: str, spool: Path) -> None:
    with AuditLogger(url, spool_dir=spool) as audit:
        one = WorkspaceRef("T0NE")
        # Four committed values: user_id, ip_address, user_agent, resource_id (slots 0-3).
        audit.audit_login(SUBJECT, one, SUBJECT_IP, SUBJECT_UA)
        audit.log_audit_event(
            "admin_action", user_id="U0OTHER771", workspace_id=one, user_agent="curl/8",
            resource="user", resource_id=SUBJECT, details={"target": SUBJECT},
        )  # fmt: skip
        assert audit.flush(20)


def _row(url: str, action: str) -> tuple[uuid.UUID, list[Any], bytes]:
    event = next(e for e in stored(url) if e.action == action)
    canonical, salt = run_sql(
        url, "SELECT canonical, pii_salt FROM audit_logs WHERE id = %s", row_id(url, event.id)
    )[0]
    hashed = parse(bytes(canonical))
    assert hashed is not None
    return event.id, hashed, bytes(salt)


def _update(url: str, event_id: uuid.UUID, values: dict[str, Any]) -> None:
    sets = ", ".join(f"{name} = %s" for name in values)
    run_sql(
        url, f"UPDATE audit_logs SET {sets} WHERE id = %s", *values.values(), row_id(url, event_id)
    )


def _refused(url: str) -> type[Exception]:
    return (
        sqlite3.IntegrityError if url.startswith("sqlite") else psycopg.errors.InsufficientPrivilege
    )


def _with_slot(salt: bytes, index: int, piece: bytes) -> bytes:
    return salt[: 16 * index] + piece + salt[16 * (index + 1) :]


# Each builds the change from the login row's hashed array and salt.
REFUSED: dict[str, Callable[[list[Any], bytes], dict[str, Any]]] = {
    "(a) the whole salt dropped": lambda h, s: {"pii_salt": None},
    "(b) a value nulled, its salt kept": lambda h, s: {"ip_address": None},
    "(c) a salt zeroed, its value kept": lambda h, s: {
        "pii_salt": erased_salt(h, s, frozenset({"ip_address"}))
    },
    "a value nulled, another field's salt zeroed": lambda h, s: {
        "ip_address": None,
        "pii_salt": erased_salt(h, s, frozenset({"user_agent"})),
    },
    "a value nulled and its slot replaced, not zeroed": lambda h, s: {
        "ip_address": None,
        "pii_salt": _with_slot(s, 1, os.urandom(16)),
    },
    "the salt cut short": lambda h, s: {
        "user_agent": None,
        "pii_salt": erased_salt(h, s, frozenset({"user_agent"}))[:32],
    },
    "the salt made longer": lambda h, s: {
        "ip_address": None,
        "pii_salt": erased_salt(h, s, frozenset({"ip_address"})) + bytes(16),
    },
    "a value where nothing is committed": lambda h, s: {"new_value": '"U0NEW"'},
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_only_a_value_with_its_own_salt_slot_may_go(
    db_url: str, spool_dir: Path, case: str
) -> None:
    _write(db_url, spool_dir)
    event_id, hashed, salt = _row(db_url, "login")
    assert list(slots(hashed, salt)) == ["user_id", "ip_address", "user_agent", "resource_id"]
    with pytest.raises(_refused(db_url), match="append-only"):
        _update(db_url, event_id, REFUSED[case](hashed, salt))
    assert _row(db_url, "login") == (event_id, hashed, salt)
    assert verify_log(db_url).ok


def test_erasing_by_hand_is_let_through_and_is_tampering_without_an_event(
    db_url: str, spool_dir: Path
) -> None:
    """The trigger lets the owner remove a value with its salt; only gdpr.erasure makes it
    legitimate."""
    _write(db_url, spool_dir)
    event_id, hashed, salt = _row(db_url, "login")
    erase_by_hand(db_url, event_id, "ip_address")
    # An erased value stays erased, and its slot stays zeroed; the others may follow.
    for change in (
        {"ip_address": SUBJECT_IP, "pii_salt": salt},
        {"pii_salt": erased_salt(hashed, salt, frozenset({"user_agent"}))},
    ):
        with pytest.raises(_refused(db_url), match="append-only"):
            _update(db_url, event_id, change)
    erase_by_hand(db_url, event_id, "ip_address", "user_id", "user_agent", "resource_id")
    _, _, after = _row(db_url, "login")
    assert after == bytes(64)
    login = next(e for e in stored(db_url) if e.action == "login")
    assert (login.user_id, login.ip_address, login.user_agent) == (None, None, None)
    report = verify_log(db_url)
    assert not report.ok
    assert [(p.kind, p.event_id) for p in report.problems] == [("modified", event_id)]
    assert "without a gdpr.erasure event" in report.problems[0].detail
    assert report.erased == 0


def test_a_canonical_form_2_that_does_not_parse_is_refused(db_url: str, spool_dir: Path) -> None:
    _write(db_url, spool_dir)
    event_id, _, _ = _row(db_url, "login")
    broken = b"[2, not json"
    if db_url.startswith("sqlite"):
        conn = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        (trigger,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'audit_logs_erase_only'"
        ).fetchone()
        conn.execute("DROP TRIGGER audit_logs_erase_only")
        conn.execute("UPDATE audit_logs SET canonical = ? WHERE id = ?", (broken, event_id.hex))
        conn.execute(trigger)
        conn.close()
    else:
        with psycopg.connect(db_url, autocommit=True) as pg:
            pg.execute("SET session_replication_role = replica")
            pg.execute("UPDATE audit_logs SET canonical = %s WHERE id = %s", (broken, event_id))
    with pytest.raises(_refused(db_url), match="append-only"):
        _update(db_url, event_id, {"user_id": None})


def test_erasure_still_works_and_verifies(db_url: str, spool_dir: Path, tmp_path: Path) -> None:
    _write(db_url, spool_dir)
    key = tmp_path / "subject.key"
    key.write_bytes(b"k" * 40)
    done = cli(
        "gdpr", "erase", "--user", SUBJECT, "--reason", "Art. 17", "--actor", "dpo",
        "--database-url", db_url, "--yes", "--subject-key", str(key),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    generate_keys(tmp_path / "keys")
    public = str(tmp_path / "keys" / "signing.pub")
    verified = cli("verify", "--public-key", public, "--database-url", db_url)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "2 with personal values erased" in verified.stdout
    # What erasure removed cannot be put back.
    event_id, _, salt = _row(db_url, "login")
    assert salt == bytes(64)
    with pytest.raises(_refused(db_url), match="append-only"):
        _update(db_url, event_id, {"user_id": SUBJECT})
    with pytest.raises(_refused(db_url), match="append-only"):
        _update(db_url, event_id, {"pii_salt": os.urandom(64)})
    again = erase_subject(db_url, SUBJECT, reason="r", actor="dpo", subject_key=b"k" * 40)
    assert again.events == 0


def _migrate(url: str, revision: str, *, down: bool = False) -> None:
    engine = make_engine(url)
    try:
        (command.downgrade if down else command.upgrade)(alembic_config(engine), revision)
    finally:
        engine.dispose()


def test_upgrade_from_0007_and_back(db_url: str, spool_dir: Path) -> None:
    _write(db_url, spool_dir)
    admin, _, _ = _row(db_url, "admin_action")
    login, _, _ = _row(db_url, "login")
    _migrate(db_url, "0007", down=True)
    _update(db_url, admin, {"user_agent": None})  # 0004's rule: the salt may stay
    upgraded = cli("db", "upgrade", "--database-url", db_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "revision 0008" in upgraded.stdout
    with pytest.raises(_refused(db_url), match="append-only"):
        _update(db_url, login, {"user_agent": None})
    erase_by_hand(db_url, login, "user_agent")
