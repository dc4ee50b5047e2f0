"""What ``auditledger status --nats-url`` adds: the stream's backlog per partition, and which
ingester owns which partitions.

The backlog is counted in stream messages, not events: a message carries up to 500 events
(one publisher batch's share of a partition), and counting the events would mean reading them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .._db.urls import is_postgres, libpq_conninfo, normalise_url, resolve_url
from ._client import connect
from .stream import stream_backlog


def collect_nats_status(
    nats_url: str, database_url: str | None, *, structured: bool = False
) -> dict[str, Any]:
    """Rows for the status table; with ``structured`` (``--json``), numbers and mappings that
    scripts read as they are, in place of the table's text."""
    report: dict[str, Any] = {}
    try:
        backlog = asyncio.run(_backlog(nats_url))
    except Exception as exc:  # noqa: BLE001 - a status report says what it could not read
        report["stream"] = f"unreachable ({type(exc).__name__})"
    else:
        if backlog is None:
            report["stream"] = "missing: run `auditledger nats setup`"
        elif structured:
            report["stream"] = {
                "messages_waiting": backlog.messages,
                "bytes": backlog.bytes,
                "partitions": backlog.partitions,
                "waiting_per_partition": {str(p): n for p, n in backlog.per_partition.items()},
            }
        else:
            report["stream"] = (
                f"{backlog.messages} messages waiting ({backlog.bytes} bytes; up to 500 events"
                f" each) in {backlog.partitions} partitions"
            )
            report["stream backlog"] = (
                " ".join(f"p{p}={n}" for p, n in backlog.per_partition.items() if n) or "none"
            )
    url = normalise_url(resolve_url(database_url))
    if is_postgres(url):
        found = _owners(libpq_conninfo(url))
        if structured or isinstance(found, str):
            report["ingesters"] = found
        else:
            text = "; ".join(f"{name}: {_ranges(parts)}" for name, parts in found.items())
            report["ingesters"] = text or "none running"
    return report


async def _backlog(nats_url: str) -> Any:
    nc = await connect(
        nats_url, timeout=3, name="auditledger-status", pending_size=2**20, give_up=5
    )
    try:
        return await stream_backlog(nc)
    finally:
        await nc.close()


def _owners(conninfo: str) -> dict[str, list[int]] | str:
    """Each running ingester's partitions, or why they cannot be read."""
    import psycopg

    from .ownership import owners

    try:
        with psycopg.connect(conninfo, connect_timeout=5, autocommit=True) as conn:
            return owners(conn)
    except psycopg.Error as exc:
        return f"unknown ({type(exc).__name__})"


def _ranges(parts: list[int]) -> str:
    return f"{len(parts)} partitions (" + ",".join(str(p) for p in parts) + ")"
