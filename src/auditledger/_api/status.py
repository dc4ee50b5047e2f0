"""What ``auditledger status`` reports: the spool on disk and the database's view."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._db.urls import missing_sqlite_file, normalise_url, resolve_url, spool_fingerprint
from .._write.spool import claim_segments, default_spool_dir, segment_count, spool_bytes


def default_spool_for(database_url: str | None) -> Path:
    """The folder an AuditLogger for this URL spools to when given no ``spool_dir``."""
    return default_spool_dir(spool_fingerprint(normalise_url(resolve_url(database_url))))


def collect_status(database_url: str | None, spool_dir: Path | None) -> dict[str, Any]:
    from .._db.migrate import check
    from .._read.store import AuditStore

    directory = spool_dir or default_spool_for(database_url)
    report: dict[str, Any] = {"spool_dir": str(directory)}
    report["spool_segments"] = segment_count(directory)
    report["spool_bytes"] = spool_bytes(directory)
    waiting = 0
    for segment in claim_segments(directory):
        try:
            waiting += sum(1 for _ in segment.events())
        finally:
            segment.release()
    report["spooled_events_replayable"] = waiting
    report["spool_segments_in_use"] = report["spool_segments"] - _claimable(directory)
    report["spool_segments_set_aside"] = len(list(directory.glob("*.corrupt")))
    try:
        missing = missing_sqlite_file(database_url)
        if missing is not None:
            report["database"] = missing
            return report
        schema = check(database_url)
    except Exception as exc:  # noqa: BLE001 - status reports, it does not fail
        report["database"] = f"unreachable ({type(exc).__name__})"
        return report
    report["database"] = "reachable"
    if schema.current is None:
        report["schema"] = "missing: run `auditledger db upgrade`"
        return report
    if not schema.up_to_date:
        report["schema"] = (
            f"behind ({schema.current}, newest {schema.head}): run `auditledger db upgrade`"
        )
        return report
    report["schema"] = "current"
    with AuditStore(database_url) as store:
        report["events_stored"] = store.count()
        report["events_quarantined"] = store.quarantine_count()
    return report


def _claimable(directory: Path) -> int:
    count = 0
    for segment in claim_segments(directory):
        count += 1
        segment.release()
    return count
