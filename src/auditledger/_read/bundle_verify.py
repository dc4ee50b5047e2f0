"""``auditledger verify-bundle``: check an export bundle with no database and no network.

The checks are the database verifier's own (``_read/verify``): the same link recomputation and
explanation of each break (changed, removed, added, reordered), the same comparison of each
event's columns with what was hashed, the same checkpoint signatures and head comparison. Only
the source differs: lines of ``events.jsonl`` instead of rows, starting from the hash the
manifest gives for the position before the range.
"""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

import orjson

from .._chain.canonical import PERSONAL, commitment, micros
from .._chain.checkpoints import Checkpoint, load_public_keys
from .._chain.links import genesis
from .._db.rows import ROW_ACTION, ROW_DETAILS, ROW_ID, ROW_SEQ
from .._errors import AuditLedgerError
from .bundle import CHECKPOINTS, EVENTS, FORMAT, MANIFEST
from .verify.chains import ChainEnds, _ChainCheck
from .verify.checkpoints import check_heads
from .verify.columns import check_columns
from .verify.erasures import ACTION as ERASURE
from .verify.erasures import Coverer, check_coverage, coverer
from .verify.report import (
    BAD_SIGNATURE,
    INSERTED,
    MISSING,
    MODIFIED,
    REORDERED,
    REWRITTEN,
    VerifyProblem,
    VerifyReport,
)


class BundleError(AuditLedgerError):
    """The bundle cannot be checked at all (not a ZIP, a file missing, an unreadable key)."""


@dataclass
class BundleReport:
    events: int = 0
    checkpoints: int = 0
    first_seq: int = 0
    last_seq: int = 0
    covered_to: int = 0  # the last position a trusted checkpoint vouches for
    erased: int = 0  # events with values erased, each covered by a gdpr.erasure event
    workspace_id: str | None = None
    key_ids: list[str] = field(default_factory=list)
    problems: list[VerifyProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "workspace_id": self.workspace_id,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "checkpoints": self.checkpoints,
            "covered_to": self.covered_to,
            "erased": self.erased,
            "key_ids": self.key_ids,
            "problems": [p.to_dict() for p in self.problems],
            "notes": self.notes,
        }


def _open(path: str | os.PathLike[str]) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError as exc:
        raise BundleError(f"no such file: {os.fspath(path)}") from exc
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{os.fspath(path)} is not a ZIP file ({type(exc).__name__})") from exc


def _manifest(zf: zipfile.ZipFile) -> dict[str, Any]:
    try:
        data = orjson.loads(zf.read(MANIFEST))
    except KeyError as exc:
        raise BundleError(f"the bundle lacks {MANIFEST}") from exc
    except (orjson.JSONDecodeError, zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{MANIFEST} is unreadable ({type(exc).__name__})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BundleError(f"{MANIFEST} is not an {FORMAT} manifest")
    try:
        for name in ("first_seq", "last_seq", "events"):
            if not _is_int(data[name]):
                raise TypeError(f"{name} is not an integer")
        uuid.UUID(data["chain_id"])
        bytes.fromhex(data["previous_hash"])
        files = data["files"]
        if not isinstance(files, dict):
            raise TypeError("files")
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{MANIFEST} lacks or garbles a field ({exc})") from exc
    for required in (EVENTS, CHECKPOINTS):
        if required not in files:
            raise BundleError(f"the manifest does not list {required}")
    return data


def _is_int(value: Any) -> bool:
    """A JSON integer: not a string of digits, not a boolean (Python's bool is an int)."""
    return type(value) is int


def _check_files(zf: zipfile.ZipFile, files: dict[str, str], report: BundleReport) -> None:
    names = zf.namelist()
    present = set(names)
    # A name held twice: this reader checks the last copy, another tool may show the first.
    for name in sorted(n for n in present if names.count(n) > 1):
        report.problems.append(
            VerifyProblem(
                INSERTED,
                f"the ZIP holds {name} {names.count(name)} times: which copy a reader takes is"
                " not defined",
            )
        )
    for name, expected in files.items():
        if name not in present:
            raise BundleError(f"the bundle lacks {name}, which its manifest lists")
        digest = hashlib.sha256()
        with zf.open(name) as member:
            while block := member.read(1 << 20):
                digest.update(block)
        if digest.hexdigest() != expected:
            report.problems.append(
                VerifyProblem(MODIFIED, f"{name} does not match its SHA-256 in the manifest")
            )
    for name in sorted(present - set(files) - {MANIFEST}):
        report.problems.append(VerifyProblem(INSERTED, f"{name} is not in the manifest"))


def _micros(text: str) -> int:
    return micros(datetime.fromisoformat(text.replace("Z", "+00:00")))


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


class _BadLine(ValueError):
    """A line of events.jsonl that breaks the format (its text names no event value)."""


_V2_PREFIX = base64.b64encode(b"[2,")[:4].decode()


def line_row(line: bytes, chain: str) -> tuple[Any, ...]:
    """A line of events.jsonl in the row layout ``_read/verify`` checks (personal values as their
    commitments with the line's salt, times in Unix microseconds, JSON as text)."""
    e = orjson.loads(line)
    if not _is_int(e["seq"]) or e["seq"] < 1:
        raise _BadLine("seq is not a positive integer")
    salt = None if e["pii_salt"] is None else bytes.fromhex(e["pii_salt"])
    personal = {
        name: None if e[name] is None else commitment(salt or b"", name, e[name])
        for _, name in PERSONAL
    }
    if e["canonical"].startswith(_V2_PREFIX):  # form 2 commits each value with its own salt
        personal = {name: e[name] for _, name in PERSONAL}
    return (
        str(uuid.UUID(e["id"])), personal["user_id"], e["workspace_id"], personal["ip_address"],
        personal["user_agent"], e["action"], e["resource"], e["resource_id"],
        _json_text(e["details"]), _json_text(e["previous_value"]), _json_text(e["new_value"]),
        _micros(e["created_at"]), _json_text(e["sanitised"]), chain, e["seq"],
        bytes.fromhex(e["chain_hash"]), base64.b64decode(e["canonical"], validate=True), salt,
    )  # fmt: skip


def _lines(member: IO[bytes]) -> Iterator[bytes]:
    for line in member:
        if line.strip():
            yield line


def _walk(
    zf: zipfile.ZipFile, manifest: dict[str, Any], wanted: set[int], report: BundleReport
) -> ChainEnds:
    chain_id = uuid.UUID(manifest["chain_id"])
    first = int(manifest["first_seq"])
    previous = bytes.fromhex(manifest["previous_hash"])
    verify_report = VerifyReport()
    check = _ChainCheck(chain_id, verify_report, wanted)
    # Start mid-chain: the walk resumes from the hash of the position before the range.
    check.expected, check.previous, check.before_previous = first, previous, previous
    if first == 1 and previous != genesis(chain_id):
        report.problems.append(
            VerifyProblem(REWRITTEN, "previous_hash is not the start of this chain", seq=1)
        )
    last_seen = 0
    coverers: list[Coverer] = []
    with zf.open(EVENTS) as member:
        for number, line in enumerate(_lines(member), 1):
            try:
                row = line_row(line, str(chain_id))
            except Exception as exc:  # noqa: BLE001 - a forged line is reported, whatever it holds
                why = f" ({exc})" if isinstance(exc, _BadLine) else ""
                report.problems.append(
                    VerifyProblem(MODIFIED, f"line {number} of {EVENTS} is unreadable{why}")
                )
                continue
            report.events += 1
            seq = row[ROW_SEQ]
            if seq < last_seen:
                report.problems.append(
                    VerifyProblem(
                        REORDERED,
                        f"line {number} of {EVENTS} holds position {seq} after position"
                        f" {last_seen}: the lines were reordered",
                        uuid.UUID(row[ROW_ID]), check.workspace, seq,
                    )
                )  # fmt: skip
            last_seen = max(last_seen, seq)
            check_columns(row, verify_report)
            check.offer(row)
            if row[ROW_ACTION] == ERASURE and row[ROW_DETAILS] is not None:
                found = coverer(row[ROW_ID], chain_id, seq, row[ROW_DETAILS])
                if found is not None:
                    coverers.append(found)
    check.drain()
    report.problems.extend(verify_report.problems)
    # The exporter takes the range up to the gdpr.erasure events that cover its erased values
    # (docs/bundle-format.md, section 4): each must be inside, verified like the rest.
    erased = verify_report.erased_events
    report.erased = len(erased) - check_coverage(report.problems, erased, coverers)
    if report.erased:
        report.notes.append(
            f"{report.erased} event(s) carry erased values, each covered by a gdpr.erasure"
            " event of the bundle"
        )
    last = int(manifest["last_seq"])
    if check.head < last:
        start = check.head + 1
        where = f"position {last}" if start == last else f"positions {start}-{last}"
        report.problems.append(
            VerifyProblem(
                MISSING, f"the events at {where} are missing from the end of the range",
                None, check.workspace, last,
            )
        )  # fmt: skip
    if report.events != int(manifest["events"]):
        report.notes.append(
            f"the manifest counts {manifest['events']} events, {EVENTS} holds {report.events}"
        )
    return {chain_id: (check.head, check.hashes)}


def verify_bundle(
    path: str | os.PathLike[str], public_keys: Sequence[str | os.PathLike[str]] = ()
) -> BundleReport:
    """Check the bundle; raises BundleError when it cannot be checked at all."""
    zf = _open(path)
    with zf:
        manifest = _manifest(zf)
        report = BundleReport(
            first_seq=int(manifest["first_seq"]),
            last_seq=int(manifest["last_seq"]),
            workspace_id=manifest.get("workspace_id"),
        )
        _check_files(zf, manifest["files"], report)
        keys = _trusted_keys(zf, manifest["files"], public_keys, report)
        good = _checkpoints(zf, keys, report)
        chain_id = uuid.UUID(manifest["chain_id"])
        wanted = {s for _, cp in good for c, s, _ in cp.heads if c == chain_id}
        ends = _walk(zf, manifest, wanted, report)
    verify_report = VerifyReport()
    check_heads(good, ends, chain_id, verify_report)
    report.problems.extend(verify_report.problems)
    hashes = ends[chain_id][1]
    # Only a head whose hash the chain matches vouches for its position: a checkpoint that
    # failed proves nothing, and the summary must not say otherwise.
    covered = [
        seq
        for _, cp in good
        for c, seq, digest in cp.heads
        if c == chain_id and seq <= report.last_seq and seq in hashes and hashes[seq][0] == digest
    ]
    report.covered_to = max(covered, default=0)
    if report.covered_to < report.last_seq:
        report.notes.append(
            f"no trusted checkpoint signs position {report.last_seq}: events removed from the"
            f" end of the range (after position {report.covered_to}) would not be detected;"
            " export with --signing-key to sign the last event"
        )
    return report


def _trusted_keys(
    zf: zipfile.ZipFile,
    files: dict[str, str],
    given: Sequence[str | os.PathLike[str]],
    report: BundleReport,
) -> dict[str, Any]:
    try:
        if given:
            keys = load_public_keys(given)
        else:
            from .._chain.checkpoints import _require_cryptography, key_id

            _require_cryptography()
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

            keys = {}
            for name in sorted(n for n in files if n.startswith("keys/")):
                public = serialization.load_pem_public_key(zf.read(name))
                if not isinstance(public, Ed25519PublicKey):
                    raise ValueError(f"{name} is not an Ed25519 key")
                keys[key_id(public)] = public
            if keys:
                report.notes.append(
                    "trusting the public keys inside the bundle: compare their ids ("
                    + ", ".join(sorted(keys))
                    + ") with the ones you were given, or pass --public-key"
                )
    except AuditLedgerError as exc:
        raise BundleError(str(exc)) from exc
    except (ValueError, KeyError) as exc:
        raise BundleError(f"a public key in the bundle is unreadable ({exc})") from exc
    report.key_ids = sorted(keys)
    return keys


def _checkpoints(
    zf: zipfile.ZipFile, keys: dict[str, Any], report: BundleReport
) -> list[tuple[str, Checkpoint]]:
    good: list[tuple[str, Checkpoint]] = []
    with zf.open(CHECKPOINTS) as member:
        for number, line in enumerate(_lines(member), 1):
            report.checkpoints += 1
            try:
                checkpoint = Checkpoint.from_line(line)
                error = checkpoint.verify(keys)
            except Exception:  # noqa: BLE001 - a damaged line is a finding, not a crash
                checkpoint, error = None, "the line is unreadable"
            if error or checkpoint is None:
                report.problems.append(
                    VerifyProblem(
                        BAD_SIGNATURE,
                        f"checkpoint {number} of {CHECKPOINTS}: {error}",
                        checkpoint_id=None if checkpoint is None else checkpoint.id,
                    )
                )
                continue
            good.append((f"checkpoint {number} of the bundle ({checkpoint.id})", checkpoint))
    return good
