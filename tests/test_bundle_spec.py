"""docs/bundle-format.md is enough to verify a bundle: an independent verifier agrees."""

from __future__ import annotations

import ast
import base64
import json
import zipfile
from pathlib import Path

from auditledger import AuditReader
from auditledger._api.exports import export_bundle
from auditledger._chain.checkpoints import generate_keys
from tests import bundle_spec_verifier
from tests.bundle_tools import forge, log_events


def test_the_spec_verifier_imports_nothing_of_ours() -> None:
    tree = ast.parse(Path(bundle_spec_verifier.__file__).read_text())
    imported = {
        name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
    }
    assert imported
    assert not any(n.split(".")[0] in ("auditledger", "tests") for n in imported), imported


def test_an_independent_verifier_checks_a_bundle(
    sqlite_url: str, spool_dir: Path, tmp_path: Path
) -> None:
    log_events(sqlite_url, spool_dir, 12)
    generate_keys(tmp_path / "keys")
    pem = (tmp_path / "keys" / "signing.pub").read_bytes()
    bundle = tmp_path / "b.zip"
    with AuditReader(sqlite_url, actor="auditor") as reader:
        export_bundle(
            reader, bundle, workspace="T0ACME", signing_key=tmp_path / "keys" / "signing.key"
        )
    assert bundle_spec_verifier.verify(str(bundle), [pem]) == []

    def changed(lines: list[dict[str, object]]) -> list[dict[str, object]]:
        lines[4]["new_value"] = {"enabled": False, "n": 1.5}
        return lines

    forged = tmp_path / "forged.zip"
    forge(bundle, forged, changed)
    findings = bundle_spec_verifier.verify(str(forged), [pem])
    with zipfile.ZipFile(bundle) as zf:
        victim = json.loads(zf.read("events.jsonl").splitlines()[4])["id"]
    assert findings == [f"event {victim} (seq 5) changed: new_value"]

    def removed(lines: list[dict[str, object]]) -> list[dict[str, object]]:
        return lines[:-1]

    forge(bundle, forged, removed)
    findings = bundle_spec_verifier.verify(str(forged), [pem])
    assert "a signed checkpoint names position 12, missing here" in findings

    def erased(lines: list[dict[str, object]]) -> list[dict[str, object]]:
        # A forged erasure: the value nulled and its salt zeroed, with no gdpr.erasure event.
        canonical = json.loads(base64.b64decode(str(lines[3]["canonical"])))
        salt = bytearray.fromhex(str(lines[3]["pii_salt"]))
        slot = [i for i in range(6, 14) if canonical[i] is not None].index(7)  # ip_address
        salt[16 * slot : 16 * slot + 16] = bytes(16)
        lines[3]["ip_address"], lines[3]["pii_salt"] = None, salt.hex()
        return lines

    forge(bundle, forged, erased)
    with zipfile.ZipFile(bundle) as zf:
        victim = json.loads(zf.read("events.jsonl").splitlines()[3])["id"]
    assert bundle_spec_verifier.verify(str(forged), [pem]) == [
        f"event {victim} (seq 4) erased without a gdpr.erasure event: ip_address"
    ]
