"""``auditledger nats setup``: the stream, created or updated idempotently; and its backlog.

One stream, ``AUDIT``, with a subject per partition. Work-queue retention: an event leaves the
stream once an ingester acknowledges it, so the stream holds exactly the backlog. Discard-new:
a full stream refuses new events (the publishers spool them) instead of deleting old ones that
no ingester has stored yet. No age limit, for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._errors import ConfigurationError
from ._client import Client, nats
from .partitions import (
    DEFAULT_PARTITIONS,
    MAX_PARTITIONS,
    STREAM,
    count_from_subjects,
    stream_subject,
    subject,
)

# The server's default; the design notes caution against larger windows (memory grows with
# the number of ids tracked). Repeats outside it are dropped by the ingesters.
DUPLICATE_WINDOW = 120.0
DEFAULT_MAX_BYTES = 10 * 1024**3


@dataclass(frozen=True)
class StreamSettings:
    partitions: int = DEFAULT_PARTITIONS
    replicas: int = 1
    max_bytes: int = DEFAULT_MAX_BYTES

    def check(self) -> None:
        if not 1 <= self.partitions <= MAX_PARTITIONS:
            raise ConfigurationError(f"--partitions must be between 1 and {MAX_PARTITIONS}")
        if self.replicas not in (1, 3):
            raise ConfigurationError("--replicas must be 1 or 3")
        if self.max_bytes < 1024 * 1024:
            raise ConfigurationError("--max-bytes must be at least 1 MiB (1048576)")


@dataclass(frozen=True)
class SetupResult:
    created: bool
    partitions: int
    replicas: int
    max_bytes: int


async def setup_stream(nc: Client, settings: StreamSettings) -> SetupResult:
    settings.check()
    js = nc.jetstream()
    api = nats.js.api
    config = api.StreamConfig(
        name=STREAM,
        description="auditledger events, one subject per partition",
        subjects=[stream_subject(settings.partitions)],
        retention=api.RetentionPolicy.WORK_QUEUE,
        discard=api.DiscardPolicy.NEW,
        storage=api.StorageType.FILE,
        num_replicas=settings.replicas,
        max_bytes=settings.max_bytes,
        duplicate_window=DUPLICATE_WINDOW,
    )
    try:
        info = await js.stream_info(STREAM)
    except nats.js.errors.NotFoundError:
        await js.add_stream(config)
        return SetupResult(True, settings.partitions, settings.replicas, settings.max_bytes)
    old = count_from_subjects(info.config.subjects)
    if old is None:
        raise ConfigurationError(f"a stream named {STREAM} exists and is not auditledger's")
    if old != settings.partitions:
        if info.state.messages:
            raise ConfigurationError(
                f"the stream still holds {info.state.messages} events in {old} partitions: "
                "stop the publishers and let the ingesters drain it before changing --partitions"
            )
        # Consumers of the old partitions would filter on subjects the stream no longer has.
        for consumer in await js.consumers_info(STREAM):
            if consumer.name.startswith("ingest-p"):
                await js.delete_consumer(STREAM, consumer.name)
    await js.update_stream(config)
    return SetupResult(False, settings.partitions, settings.replicas, settings.max_bytes)


@dataclass(frozen=True)
class Backlog:
    partitions: int
    messages: int
    bytes: int
    per_partition: dict[int, int]


async def stream_backlog(nc: Client) -> Backlog | None:
    """The messages waiting in the stream (each up to 500 events), per partition; None when
    there is no stream."""
    js = nc.jetstream()
    try:
        info = await js.stream_info(STREAM, subjects_filter=">")
    except nats.js.errors.NotFoundError:
        return None
    count = count_from_subjects(info.config.subjects) or 0
    subjects = info.state.subjects or {}
    per = {p: subjects.get(subject(count, p), 0) for p in range(count)}
    return Backlog(count, info.state.messages, info.state.bytes, per)
