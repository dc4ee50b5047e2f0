"""A partition's consumer, and the stream's partition count, as an ingester reads them.

Each new owner of a partition creates its consumer afresh (see ``ingester``): what a consumer
remembers is disposable, since the database says what is stored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from ._client import Client, nats
from .partitions import STREAM, consumer_name, count_from_subjects, subject

ACK_WAIT = 30.0  # far above a batch's commit; a new owner does not wait for it (``ingester``)
_API_TIMEOUT = 2.0  # seconds a stream or consumer request may take

Report = Callable[[str, str], None]  # (key, message): reported once a minute at most


async def read_partition_count(nc: Client, report: Report) -> int | None:
    """The stream's partition count, or None (reported) when it cannot be read."""
    try:
        info = await nc.jetstream(timeout=_API_TIMEOUT).stream_info(STREAM)
    except nats.js.errors.NotFoundError:
        report("stream", "auditledger ingest: no stream yet (`auditledger nats setup`)")
        return None
    except nats.js.errors.ServiceUnavailableError:
        report("stream", "auditledger ingest: the NATS server does not offer JetStream (-js)")
        return None
    except Exception as exc:  # noqa: BLE001 - the server away or slow: asked again later
        report("stream", f"auditledger ingest: stream unreadable ({type(exc).__name__})")
        return None
    count = count_from_subjects(info.config.subjects)
    if not count:
        report("stream", f"auditledger ingest: the stream {STREAM} is not auditledger's")
    return count


async def subscribe(nc: Client, count: int, partition: int, max_ack_pending: int) -> Any:
    """A fresh consumer of the partition (the last owner's deleted), and a pull on it."""
    js = nc.jetstream()
    name = consumer_name(partition)
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_consumer(STREAM, name)
    await js.add_consumer(
        STREAM,
        nats.js.api.ConsumerConfig(
            durable_name=name,
            filter_subject=subject(count, partition),
            ack_policy=nats.js.api.AckPolicy.EXPLICIT,
            deliver_policy=nats.js.api.DeliverPolicy.ALL,
            ack_wait=ACK_WAIT,
            max_deliver=-1,  # never strand an audit event
            # Its state is disposable: every owner starts a fresh consumer, and what is
            # stored is known from the database, not from the consumer. Kept on disk, its
            # state cost nats-server 1-1.3 µs an event (half of its work) while draining.
            mem_storage=True,
            max_ack_pending=max_ack_pending,
        ),
    )
    return await js.pull_subscribe_bind(durable=name, stream=STREAM)


async def consumer_gone(sub: Any, report: Report) -> bool:
    """Whether the partition's consumer no longer exists while the connection stayed up:
    deleted by hand, or lost with the memory of every server that held it (its state lives
    there, see ``subscribe``). Fetching from it times out empty, as from an idle one; the
    caller creates it again."""
    try:
        await sub.consumer_info()
    except nats.js.errors.NotFoundError:
        report("consumer-gone", "auditledger ingest: a consumer was gone; recreated")
        return True
    except Exception:  # noqa: BLE001 - the server away or slow: the fetches say so
        return False
    return False
