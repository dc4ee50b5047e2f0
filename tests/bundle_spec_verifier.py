"""A bundle verifier written from docs/bundle-format.md alone: stdlib and cryptography only.

It must never import auditledger (tests/test_bundle_spec.py checks): it shows the document is
enough for an auditor to check a bundle without our code.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
import zipfile
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key

PERSONAL = {7: "user_id", 8: "ip_address", 9: "user_agent"}
SCALARS = {1: "id", 2: "workspace_id", 3: "action", 4: "resource", 5: "resource_id"}
JSON_VALUES = {10: "details", 11: "previous_value", 12: "new_value", 13: "sanitised"}


def sha(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def same(a: Any, b: Any) -> bool:
    """Equal as JSON: numbers by value, objects regardless of key order."""

    def norm(x: Any) -> Any:
        return json.loads(json.dumps(x), parse_float=Decimal, parse_int=Decimal)

    return bool(norm(a) == norm(b))


def micros(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


V2_SCALARS = {1: "id", 2: "workspace_id", 3: "action", 4: "resource"}
V2_COMMITTED = {
    6: "user_id", 7: "ip_address", 8: "user_agent", 9: "resource_id",
    10: "details", 11: "previous_value", 12: "new_value", 13: "sanitised",
}  # fmt: skip


def json_text(value: Any) -> list[str]:
    """The committed text of a JSON value: section 4's form (and the exponent variant)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return [text, re.sub(r"(\d)e([+-])0*(\d)", r"\1e\2\3", text)]


ERASABLE = set(V2_COMMITTED.values())


def column_problems_v2(e: dict[str, Any], hashed: list[Any], erased: list[str]) -> list[str]:
    wrong = [name for i, name in V2_SCALARS.items() if hashed[i] != e[name]]
    if hashed[5] != micros(e["created_at"]):
        wrong.append("created_at")
    salts = bytes.fromhex(e["pii_salt"]) if e["pii_salt"] else b""
    offset = 0
    for i, name in V2_COMMITTED.items():
        if hashed[i] is None:
            if e[name] is not None:
                wrong.append(name)
            continue
        salt, offset = salts[offset : offset + 16], offset + 16
        if e[name] is None:
            # erased (section 4) when its salt is zeros; otherwise removed by someone else
            (erased if salt == bytes(16) else wrong).append(name)
            continue
        texts = [e[name]] if i < 10 else json_text(e[name])
        commitments = {sha(salt, name.encode(), b"\0", t.encode()).hex() for t in texts}
        if hashed[i] not in commitments:
            wrong.append(name)
    return wrong


def column_problems(e: dict[str, Any], hashed: list[Any], erased: list[str]) -> list[str]:
    if hashed[0] == 2:
        return column_problems_v2(e, hashed, erased)
    wrong = [name for i, name in SCALARS.items() if hashed[i] != e[name]]
    if hashed[0] != 1 or hashed[6] != micros(e["created_at"]):
        wrong.append("created_at")
    salt = bytes.fromhex(e["pii_salt"]) if e["pii_salt"] else None
    for i, name in PERSONAL.items():
        if e[name] is None:
            if hashed[i] is not None and salt is not None:
                wrong.append(name)  # a value removed without its salt: not an erasure
            elif hashed[i] is not None:
                erased.append(name)
        elif salt is None or hashed[i] != sha(salt, name.encode(), b"\0", e[name].encode()).hex():
            wrong.append(name)
    wrong += [name for i, name in JSON_VALUES.items() if not same(hashed[i], e[name])]
    return wrong


def verify(path: str, trusted_pems: list[bytes]) -> list[str]:
    """Every finding, as text naming the event; an empty list means intact."""
    findings: list[str] = []
    with zipfile.ZipFile(path) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        assert manifest["format"] == "auditledger/bundle/v1"
        names = zf.namelist()
        for name in sorted(set(names)):
            if names.count(name) > 1:
                findings.append(f"file {name} is in the ZIP {names.count(name)} times")
            elif name != "manifest.json" and name not in manifest["files"]:
                findings.append(f"file {name} is not in the manifest")
        for name, digest in manifest["files"].items():
            if hashlib.sha256(zf.read(name)).hexdigest() != digest:
                findings.append(f"file {name} does not match the manifest")
        events = [json.loads(x) for x in zf.read("events.jsonl").splitlines() if x.strip()]
        checkpoints = [json.loads(x) for x in zf.read("checkpoints.jsonl").splitlines() if x]
    chain = uuid.UUID(manifest["chain_id"])
    previous = bytes.fromhex(manifest["previous_hash"])
    if manifest["first_seq"] == 1 and previous != sha(b"\x01auditledger/chain/v1", chain.bytes):
        findings.append("previous_hash is not the chain's start")
    expected, hashes = manifest["first_seq"], {}
    erasures: list[tuple[str, int, list[str]]] = []  # events erased: id, seq, columns
    covers: list[tuple[str, int, dict[str, Any]]] = []  # gdpr.erasure events: id, seq, details
    for e in events:
        if type(e["seq"]) is not int:
            findings.append(f"event {e['id']}: seq is not an integer")
            continue
        if e["seq"] != expected:
            kind = "removed before" if e["seq"] > expected else "added or reordered:"
            findings.append(f"position {expected}: events {kind} event {e['id']} (seq {e['seq']})")
        canonical = base64.b64decode(e["canonical"])
        link = sha(b"\x00", previous, e["seq"].to_bytes(8, "big"), canonical)
        if link.hex() != e["chain_hash"]:
            findings.append(f"event {e['id']} (seq {e['seq']}) does not link to the one before")
        erased: list[str] = []
        wrong = column_problems(e, json.loads(canonical), erased)
        if wrong:
            findings.append(f"event {e['id']} (seq {e['seq']}) changed: {', '.join(wrong)}")
        elif link.hex() == e["chain_hash"] and e["action"] == "gdpr.erasure":
            covers.append((e["id"], e["seq"], e["details"] or {}))
        if erased and not wrong:
            erasures.append((e["id"], e["seq"], erased))
        previous, expected = bytes.fromhex(e["chain_hash"]), e["seq"] + 1
        hashes[e["seq"]] = e["chain_hash"]
    for event_id, seq, columns in erasures:
        allowed: set[str] = set()
        for _, at, details in covers:
            if at > seq and isinstance(details.get("erased"), dict):
                allowed |= set(details["erased"].get(event_id, []))
            elif at > seq and event_id in details.get("events", []):
                allowed |= ERASABLE  # an older erasure event, without the per-column list
        missing = [name for name in columns if name not in allowed]
        if missing:
            findings.append(
                f"event {event_id} (seq {seq}) erased without a gdpr.erasure event: "
                + ", ".join(missing)
            )
    if expected - 1 != manifest["last_seq"]:
        findings.append(f"the range ends at {expected - 1}, not {manifest['last_seq']}")
    keys: dict[str, Ed25519PublicKey] = {}
    for pem in trusted_pems:
        loaded = load_pem_public_key(pem)
        assert isinstance(loaded, Ed25519PublicKey)
        raw = loaded.public_bytes(Encoding.Raw, PublicFormat.Raw)
        keys[hashlib.sha256(raw).hexdigest()[:16]] = loaded
    signed_to = 0
    for line in checkpoints:
        body = json.loads(line["body"])
        key = keys.get(body["key_id"])
        if key is None:
            continue  # signed by a key we do not trust: proves nothing
        key.verify(base64.b64decode(line["signature"]), line["body"].encode())  # raises if forged
        for head_chain, seq, digest in body["heads"]:
            if uuid.UUID(head_chain) != chain:
                continue
            if seq not in hashes:
                findings.append(f"a signed checkpoint names position {seq}, missing here")
            elif hashes[seq] != digest:
                findings.append(f"position {seq} differs from the signed checkpoint")
            else:
                signed_to = max(signed_to, seq)
    if signed_to < manifest["last_seq"]:
        findings.append(f"only positions up to {signed_to} are signed")
    return findings
