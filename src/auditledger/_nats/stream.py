"""``auditledger nats setup``: the stream, created or updated idempotently; and its backlog.

One stream, ``AUDIT``, with a subject per partition. Work-queue retention: an event leaves the
stream once an ingester acknowledges it, so the stream holds exactly the backlog. Discard-new:
a full stream refuses new events (the publishers spool them) instead of deleting old ones that
no ingester has stored yet. No age limit, for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._errors import ConfigurationError
from ._client import Client, nats
from .partitions import (
    DEFAULT_PARTITIONS,
    MAX_PARTITIONS,
    STREAM,
    SUBJECT_PREFIX,
    count_from_subjects,
    stream_subject,
    subject,
)

# The server's default; the design notes caution against larger windows (memory grows with
# the number of ids tracked). Repeats outside it are dropped by the ingesters.
DUPLICATE_WINDOW = 120.0
DEFAULT_MAX_BYTES = 10 * 1024**3
_REPLICAS_UNCLUSTERED = 10074  # JetStream: "replicas > 1 not supported in non-clustered mode"
_NOT_CLUSTERED = (
    "this NATS server is not part of a cluster: --replicas 3 needs a JetStream cluster of at "
    "least 3 servers"
)


@dataclass(frozen=True)
class StreamSettings:
    """What ``nats setup`` was asked for. ``None``: the stream's current value when it exists
    (a re-run without a flag never resets it), the default when it is created."""

    partitions: int | None = None
    replicas: int | None = None
    max_bytes: int | None = None

    def check(self) -> None:
        if self.partitions is not None and not 1 <= self.partitions <= MAX_PARTITIONS:
            raise ConfigurationError(f"--partitions must be between 1 and {MAX_PARTITIONS}")
        if self.replicas is not None and self.replicas not in (1, 3):
            raise ConfigurationError("--replicas must be 1 or 3")
        if self.max_bytes is not None and self.max_bytes < 1024 * 1024:
            raise ConfigurationError("--max-bytes must be at least 1 MiB (1048576)")


@dataclass(frozen=True)
class SetupResult:
    created: bool
    partitions: int
    replicas: int
    max_bytes: int
    changes: tuple[str, ...] = ()  # what an update changed, as "what: before -> after"


def _config(partitions: int, replicas: int, max_bytes: int) -> Any:
    api = nats.js.api
    return api.StreamConfig(
        name=STREAM,
        description="auditledger events, one subject per partition",
        subjects=[stream_subject(partitions)],
        retention=api.RetentionPolicy.WORK_QUEUE,
        discard=api.DiscardPolicy.NEW,
        storage=api.StorageType.FILE,
        num_replicas=replicas,
        max_bytes=max_bytes,
        duplicate_window=DUPLICATE_WINDOW,
    )


async def setup_stream(nc: Client, settings: StreamSettings) -> SetupResult:
    settings.check()
    js = nc.jetstream()
    try:
        info = await js.stream_info(STREAM)
    except nats.js.errors.NotFoundError:
        partitions = settings.partitions or DEFAULT_PARTITIONS
        replicas = settings.replicas or 1
        max_bytes = settings.max_bytes or DEFAULT_MAX_BYTES
        try:
            await js.add_stream(_config(partitions, replicas, max_bytes))
        except nats.js.errors.APIError as exc:
            if exc.err_code == _REPLICAS_UNCLUSTERED:
                raise ConfigurationError(_NOT_CLUSTERED) from exc
            raise
        return SetupResult(True, partitions, replicas, max_bytes)
    old = count_from_subjects(info.config.subjects)
    if old is None:
        raise ConfigurationError(f"a stream named {STREAM} exists and is not auditledger's")
    if (settings.replicas or 1) > 1 and info.cluster is None:
        # A server on its own refuses replicas when creating a stream, but takes them on an
        # update and still keeps one copy: the operator would count on copies that do not
        # exist. (A stream on a cluster says which cluster it is on.)
        raise ConfigurationError(_NOT_CLUSTERED)
    was = _current(info.config, old)
    partitions = settings.partitions or old
    replicas = settings.replicas or was["replicas"]
    max_bytes = settings.max_bytes or was["max bytes"]
    if max_bytes < was["max bytes"] and max_bytes < 2 * info.state.bytes:
        # The server makes room by deleting the oldest messages, discard-new or not: events
        # no ingester has stored. Twice what it holds leaves room for what arrives meanwhile.
        raise ConfigurationError(
            f"the stream holds {info.state.bytes} bytes: a cap under twice that would make "
            "the server delete events not stored yet; let the ingesters drain it first"
        )
    config = _config(partitions, replicas, max_bytes)
    if partitions == old:
        await js.update_stream(config)
    else:
        await _change_partitions(js, info.config, config, old)
    now = _current(config, partitions)
    changes = tuple(f"{k}: {was[k]} -> {now[k]}" for k in now if was[k] != now[k])
    return SetupResult(False, partitions, replicas, max_bytes, changes)


async def _change_partitions(js: Any, before: Any, after: Any, old: int) -> None:
    """The new subjects first: from then on a publisher still on the old count is refused
    (it spools and reads the count again), so what the old subjects hold can only shrink.
    If they hold anything (events not drained yet, or published between a look and the
    change), the old subjects are put back, and with them every way to those events."""
    await js.update_stream(after)
    state = (await js.stream_info(STREAM, subjects_filter=f"{SUBJECT_PREFIX}.{old}.>")).state
    left = sum((state.subjects or {}).values())  # (new subjects may hold some already)
    if left:
        await js.update_stream(before)
        raise ConfigurationError(
            f"the stream still holds {left} messages (up to 500 events each) in "
            f"{old} partitions: stop the publishers and let the ingesters drain it before "
            "changing --partitions"
        )
    # Consumers of the old partitions filter on subjects the stream no longer has.
    for consumer in await js.consumers_info(STREAM):
        if consumer.name.startswith("ingest-p"):
            await js.delete_consumer(STREAM, consumer.name)


def _current(config: Any, partitions: int) -> dict[str, Any]:
    """The settings ``setup`` owns, as a stream has them (what an update may change)."""
    return {
        "partitions": partitions,
        "replicas": config.num_replicas or 1,
        "max bytes": config.max_bytes,
        "discard": getattr(config.discard, "value", config.discard),
        "duplicate window": config.duplicate_window,
    }


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
