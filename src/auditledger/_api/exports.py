"""Exports through ``AuditReader``: files and bundles, each recorded in the workspace's chain.

An export is a read that leaves the system, so it always appends ``audit_log.exported`` (who,
which filters, how many events, the format and the file's SHA-256) to the exported workspace's
chain, after the file is complete.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from sqlalchemy import insert

from .._db.schema import audit_checkpoints
from .._read.bundle import covering_checkpoints, find_range, write_bundle
from .._read.export import (
    ExportResult,
    Progress,
    atomic_file,
    check_writable,
    export_events,
    export_lines,
)
from .._read.export_pg import jsonl_lines
from .._read.filters import aware

if TYPE_CHECKING:
    from .reader import AuditReader

EXPORTED = "audit_log.exported"


@dataclass(frozen=True)
class BundleResult:
    path: Path
    events: int
    sha256: str
    first_seq: int
    last_seq: int
    signed: bool


def export_file(
    reader: AuditReader,
    path: str | os.PathLike[str],
    *,
    workspace: uuid.UUID | str,
    fmt: str = "jsonl",
    progress: Progress | None = None,
    **filters: Any,
) -> ExportResult:
    target = Path(path)
    chosen = reader.filters(workspace=workspace, **filters)
    check_writable(target)
    if fmt == "jsonl" and reader.engine.dialect.name == "postgresql":
        with reader.engine.connect() as conn:
            result = export_lines(jsonl_lines(conn, chosen), target, progress)
    else:
        result = export_events(reader.stream(chosen, chunk=5000), target, fmt, progress)
    reader.record(
        EXPORTED,
        chosen.workspace,
        {
            "actor": reader.actor,
            "filters": chosen.described(),
            "events": result.events,
            "format": fmt,
            "sha256": result.sha256,
            "file": target.name,
        },
    )
    return result


def export_bundle(
    reader: AuditReader,
    path: str | os.PathLike[str],
    *,
    workspace: uuid.UUID | str,
    since: datetime | None = None,
    until: datetime | None = None,
    signing_key: str | os.PathLike[str] | None = None,
    public_keys: list[str | os.PathLike[str]] | None = None,
    progress: Progress | None = None,
) -> BundleResult:
    """Raises LookupError when the range holds no event, ConfigurationError for a bad key."""
    from .._chain.checkpoints import Signer, make_checkpoint

    target = Path(path)
    chain = reader.resolve_workspace(workspace)
    since, until = (None if t is None else aware(t) for t in (since, until))
    check_writable(target)
    signer = None if signing_key is None else Signer.from_file(signing_key)
    keys = {} if signer is None else {signer.key_id: signer.public_pem()}
    for key_path in public_keys or []:
        from .._chain.checkpoints import load_public_keys

        for key_id in load_public_keys([key_path]):
            keys[key_id] = Path(key_path).read_bytes()
    with reader.engine.connect() as conn:
        span = find_range(conn, chain, since, until)
        if span is None:
            raise LookupError(f"workspace {chain} has no events in that range")
        checkpoints = covering_checkpoints(conn, span)
        fresh = None
        if signer is not None:
            fresh = make_checkpoint(signer, [(chain, span.last, span.last_hash)], time.time_ns())
            checkpoints.append(fresh)
        with atomic_file(target) as out:
            stream, now = cast(IO[bytes], out), datetime.now(UTC)
            events = write_bundle(stream, conn, span, checkpoints, keys, now, progress)
            if fresh is not None:
                # Stored too, so `auditledger verify` checks the database against it as well.
                with reader.engine.begin() as store:
                    store.execute(
                        insert(audit_checkpoints).values(
                            id=fresh.id, created_at=fresh.created_at, key_id=fresh.key_id,
                            body=fresh.body, signature=fresh.signature,
                        )
                    )  # fmt: skip
        digest = out.digest.hexdigest()
    described = {
        name: value.isoformat()
        for name, value in (("since", since), ("until", until))
        if value is not None
    }
    reader.record(
        EXPORTED,
        chain,
        {
            "actor": reader.actor,
            "filters": described,
            "events": events,
            "format": "bundle",
            "sha256": digest,
            "file": target.name,
            "first_seq": span.first,
            "last_seq": span.last,
            "signed_by": None if signer is None else signer.key_id,
        },
    )
    return BundleResult(target, events, digest, span.first, span.last, signer is not None)
