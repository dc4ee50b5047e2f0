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


def collect_nats_status(nats_url: str, database_url: str | None) -> dict[str, Any]:
    report: dict[str, Any] = {}
    try:
        backlog = asyncio.run(_backlog(nats_url))
    except Exception as exc:  # noqa: BLE001 - a status report says what it could not read
        report["stream"] = f"unreachable ({type(exc).__name__})"
    else:
        if backlog is None:
            report["stream"] = "missing: run `auditledger nats setup`"
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
        report["ingesters"] = _ingesters(libpq_conninfo(url))
    return report


async def _backlog(nats_url: str) -> Any:
    nc = await connect(
        nats_url, timeout=3, name="auditledger-status", pending_size=2**20, give_up=5
    )
    try:
        return await stream_backlog(nc)
    finally:
        await nc.close()


def _ingesters(conninfo: str) -> str:
    import psycopg

    from .ownership import owners

    try:
        with psycopg.connect(conninfo, connect_timeout=5, autocommit=True) as conn:
            found = owners(conn)
    except psycopg.Error as exc:
        return f"unknown ({type(exc).__name__})"
    if not found:
        return "none running"
    return "; ".join(f"{name}: {_ranges(parts)}" for name, parts in found.items())


def _ranges(parts: list[int]) -> str:
    return f"{len(parts)} partitions (" + ",".join(str(p) for p in parts) + ")"
