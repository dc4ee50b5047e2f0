"""Bundles and erasure: a legitimately erased event verifies offline because the exporter takes
the range up to its gdpr.erasure event; a forged erasure (value nulled, salt zeroed, no such
event) is tampering, for verify-bundle and for the independent verifier alike. And a bundle
whose ZIP or lines break the format is never called intact."""

from __future__ import annotations

import base64
import hashlib
import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from auditledger import AuditReader
from auditledger._api.exports import export_bundle
from auditledger._chain.checkpoints import generate_keys
from auditledger._chain.v2 import erased_salt
from auditledger._gdpr.erase import erase_subject
from auditledger._read.bundle_verify import BundleError, verify_bundle
from tests import bundle_spec_verifier
from tests.bundle_tools import Lines, forge, log_events
from tests.helpers import cli


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    generate_keys(tmp_path / "keys")
    return tmp_path / "keys"


def _export(url: str, out: Path, keys: Path, until: datetime | None = None) -> Path:
    with AuditReader(url, actor="auditor") as reader:
        export_bundle(
            reader, out, workspace="T0ACME", until=until, signing_key=keys / "signing.key"
        )
    return out


def _lines(bundle: Path) -> list[dict[str, object]]:
    with zipfile.ZipFile(bundle) as zf:
        return [json.loads(x) for x in zf.read("events.jsonl").splitlines() if x.strip()]


def _null(line: dict[str, object], *columns: str) -> None:
    """Erase values of a line as the erasure path does (value null, its salt zeros)."""
    hashed = json.loads(base64.b64decode(str(line["canonical"])))
    salt = erased_salt(hashed, bytes.fromhex(str(line["pii_salt"])), frozenset(columns))
    for name in columns:
        line[name] = None
    line["pii_salt"] = salt.hex()


def test_a_forged_erasure_is_tampering(
    db_url: str, spool_dir: Path, tmp_path: Path, keys: Path
) -> None:
    log_events(db_url, spool_dir, 8)
    bundle = _export(db_url, tmp_path / "b.zip", keys)
    pem = (keys / "signing.pub").read_bytes()
    victim = str(_lines(bundle)[2]["id"])

    def erased(lines: Lines) -> Lines:
        _null(lines[2], "ip_address")
        return lines

    forged = tmp_path / "forged.zip"
    forge(bundle, forged, erased)
    report = verify_bundle(forged, [keys / "signing.pub"])
    assert [(str(p.event_id), p.seq, p.detail) for p in report.problems] == [
        (victim, 3, "values removed without a gdpr.erasure event covering them: ip_address")
    ]
    assert report.erased == 0
    assert bundle_spec_verifier.verify(str(forged), [pem]) == [
        f"event {victim} (seq 3) erased without a gdpr.erasure event: ip_address"
    ]
    done = cli("verify-bundle", str(forged), "--public-key", str(keys / "signing.pub"))
    assert done.returncode == 1
    assert victim in done.stdout


def test_an_erased_then_exported_range_verifies(
    db_url: str, spool_dir: Path, tmp_path: Path, keys: Path
) -> None:
    # Ids of at least 3 characters: erasure refuses shorter ones (they are tokens of too much).
    log_events(db_url, spool_dir, 6, user_prefix="U0USER")
    middle = datetime.now(UTC)
    log_events(db_url, spool_dir, 3, user_prefix="U0USER")
    erase_subject(db_url, "U0USER1", reason="Art. 17", actor="dpo", subject_key=b"k" * 40)
    bundle = _export(db_url, tmp_path / "b.zip", keys, until=middle)
    lines = _lines(bundle)
    # The range asked for ends before the erasure; the bundle goes on to its gdpr.erasure event.
    assert lines[-1]["action"] == "gdpr.erasure"
    erased = [x for x in lines if x["user_id"] is None and x["action"] == "settings_changed"]
    assert len(erased) == 3  # U0USER1 acted in events 2, 5 and 8
    report = verify_bundle(bundle, [keys / "signing.pub"])
    assert report.ok, report.problems
    assert report.erased == 3
    assert report.covered_to == report.last_seq == lines[-1]["seq"]
    pem = (keys / "signing.pub").read_bytes()
    assert bundle_spec_verifier.verify(str(bundle), [pem]) == []

    # The erasure event's list changed to cover a value it never named: it no longer verifies,
    # and covers nothing.
    def widened(lines: Lines) -> Lines:
        details = lines[-1]["details"]
        assert isinstance(details, dict)
        details["erased"][str(lines[0]["id"])] = ["ip_address"]
        _null(lines[0], "ip_address")
        return lines

    forged = tmp_path / "forged.zip"
    forge(bundle, forged, widened)
    report = verify_bundle(forged, [keys / "signing.pub"])
    assert str(lines[0]["id"]) in {str(p.event_id) for p in report.problems}
    findings = bundle_spec_verifier.verify(str(forged), [pem])
    assert any("erased without a gdpr.erasure event" in f for f in findings)


def _rezip(source: Path, target: Path, extra: list[tuple[str, bytes]]) -> None:
    with zipfile.ZipFile(source) as zf:
        members = [(n, zf.read(n)) for n in zf.namelist()]
    with zipfile.ZipFile(target, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
        for name, data in extra:
            with pytest.warns(UserWarning, match="Duplicate"):
                zf.writestr(name, data)


def test_a_name_held_twice_is_tampering(
    sqlite_url: str, spool_dir: Path, tmp_path: Path, keys: Path
) -> None:
    log_events(sqlite_url, spool_dir, 4)
    bundle = _export(sqlite_url, tmp_path / "b.zip", keys)
    twice = tmp_path / "twice.zip"
    with zipfile.ZipFile(bundle) as zf:
        events = zf.read("events.jsonl")
    _rezip(bundle, twice, [("events.jsonl", events)])
    report = verify_bundle(twice, [keys / "signing.pub"])
    assert [p.detail for p in report.problems] == [
        "the ZIP holds events.jsonl 2 times: which copy a reader takes is not defined"
    ]
    pem = (keys / "signing.pub").read_bytes()
    assert "file events.jsonl is in the ZIP 2 times" in bundle_spec_verifier.verify(
        str(twice), [pem]
    )
    done = cli("verify-bundle", str(twice), "--public-key", str(keys / "signing.pub"))
    assert done.returncode == 1


def test_a_position_given_as_text_is_not_read_as_a_number(
    sqlite_url: str, spool_dir: Path, tmp_path: Path, keys: Path
) -> None:
    log_events(sqlite_url, spool_dir, 6)
    bundle = _export(sqlite_url, tmp_path / "b.zip", keys)

    def texted(lines: Lines) -> Lines:
        lines[4]["seq"] = str(lines[4]["seq"])
        return lines

    forged = tmp_path / "forged.zip"
    forge(bundle, forged, texted)
    report = verify_bundle(forged, [keys / "signing.pub"])
    assert not report.ok
    assert any("seq is not a positive integer" in p.detail for p in report.problems)

    with zipfile.ZipFile(bundle) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    manifest = json.loads(files["manifest.json"])
    manifest["first_seq"] = str(manifest["first_seq"])
    files["manifest.json"] = json.dumps(manifest).encode()
    texted_manifest = tmp_path / "manifest.zip"
    with zipfile.ZipFile(texted_manifest, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    with pytest.raises(BundleError, match="first_seq is not an integer"):
        verify_bundle(texted_manifest, [keys / "signing.pub"])
    done = cli("verify-bundle", str(texted_manifest))
    assert done.returncode == 2
    assert "first_seq is not an integer" in done.stderr


def test_a_failed_checkpoint_signs_nothing_in_the_summary(
    sqlite_url: str, spool_dir: Path, tmp_path: Path, keys: Path
) -> None:
    log_events(sqlite_url, spool_dir, 5)
    bundle = _export(sqlite_url, tmp_path / "b.zip", keys)

    def rehashed(lines: Lines) -> Lines:
        lines[-1]["chain_hash"] = hashlib.sha256(b"forged").hexdigest()
        return lines

    forged = tmp_path / "forged.zip"
    forge(bundle, forged, rehashed)
    report = verify_bundle(forged, [keys / "signing.pub"])
    assert "rewritten" in {p.kind for p in report.problems}
    assert report.covered_to == 0
    done = cli("verify-bundle", str(forged), "--public-key", str(keys / "signing.pub"))
    assert done.returncode == 1
    assert "signed up to position" not in done.stdout
    assert "no position signed by a trusted checkpoint" in done.stdout
