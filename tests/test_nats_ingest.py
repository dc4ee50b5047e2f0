"""Ingesters: exactly once in PostgreSQL, whatever dies when.

Every test runs its own nats-server and PostgreSQL database, real publisher and ingester
processes, and ends with the same check: rows = distinct ids = events logged, and
``auditledger verify`` exits 0 (the chains are whole).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from auditledger import AuditLogger, WorkspaceRef
from tests.helpers import cli, via
from tests.nats_cluster import Cluster, cluster, conninfo, counts, keys, owners, shares, wait_all
from tests.nats_server import NatsServer, nats_server, wait_until
from tests.tcp_proxy import TcpProxy

__all__ = ["cluster", "keys", "nats_server"]
pytestmark = pytest.mark.postgres


def test_publishers_and_ingesters_store_every_event_once(cluster: Cluster) -> None:
    cluster.ingester()
    cluster.ingester()
    # Owners spread: each of the two takes its share of the 8 partitions.
    wait_until(lambda: shares(cluster.db_url) == [4, 4], 30, "the partitions to spread")
    wait_all(cluster.publishers(3, 1000))
    cluster.wait_stored(3000)
    cluster.check(3000)
    status = cli("status", "--nats-url", cluster.nats.url, "--database-url", cluster.db_url)
    assert "0 messages waiting" in status.stdout
    assert "auditledger-ingest" in status.stdout


def test_an_ingester_killed_mid_stream_loses_and_doubles_nothing(cluster: Cluster) -> None:
    victim = cluster.ingester()
    cluster.ingester()
    publishers = cluster.publishers(2, 1500)
    wait_until(lambda: counts(cluster.db_url)[0] > 300, 60, "the first rows")
    victim.send_signal(signal.SIGKILL)  # between a commit and its ack, or anywhere else
    victim.wait()
    # Its session died with it, and with the session its locks: taken over within seconds.
    wait_until(lambda: shares(cluster.db_url) == [8], 10, "the survivor to take over")
    wait_all(publishers)
    cluster.wait_stored(3000)  # the survivor takes over the victim's partitions
    cluster.check(3000)


def test_the_nats_server_killed_mid_burst_and_restarted(cluster: Cluster) -> None:
    cluster.ingester()
    publishers = cluster.publishers(2, 1500)
    wait_until(lambda: cluster.nats.backlog() + counts(cluster.db_url)[0] > 300, 60, "a burst")
    cluster.nats.kill()  # publishers spool what the server has not acknowledged
    cluster.nats.start()  # on the same store
    wait_all(publishers)  # they replay their spools and flush
    cluster.wait_stored(3000)
    cluster.check(3000)


def test_postgresql_away_the_stream_absorbs_then_drains(cluster: Cluster, pg_url: str) -> None:
    with TcpProxy(make_url(pg_url).host or "127.0.0.1", make_url(pg_url).port or 5432) as proxy:
        cluster.ingester(via(proxy, pg_url))
        wait_until(lambda: owners(pg_url) == 8, 30, "the ingester to own every partition")
        proxy.refuse()
        wait_all(cluster.publishers(2, 1000))
        assert cluster.nats.backlog() > 0  # held by the stream, not by the publishers
        assert counts(pg_url)[0] < 2000
        proxy.restore()
        cluster.wait_stored(2000)
    cluster.check(2000)


async def _publish_raw(nc: Any, bodies: list[tuple[str, bytes, str | None]]) -> None:
    js = nc.jetstream()
    for subject, body, msg_id in bodies:
        await js.publish(subject, body, headers={"Nats-Msg-Id": msg_id} if msg_id else None)


def test_a_poison_message_is_quarantined_not_retried_forever(cluster: Cluster) -> None:
    cluster.nats.run(
        _publish_raw,
        [
            ("audit.v1.8.3", b"not json at all \xff", "poison-1"),
            ("audit.v1.8.5", b'{"v": 1, "row": [1, 2]}', None),
        ],
    )
    cluster.ingester()
    wait_all(cluster.publishers(1, 500))
    wait_until(lambda: counts(cluster.db_url)[2] == 2, 60, "the quarantine rows")
    cluster.wait_stored(500)
    cluster.check(500, quarantined=2)
    with psycopg.connect(conninfo(cluster.db_url)) as conn:
        reasons = [r[0] for r in conn.execute("SELECT reason FROM audit_quarantine")]
    assert all(r.startswith("unreadable stream message") for r in reasons)


def test_duplicate_publishes_are_stored_once(cluster: Cluster, tmp_path: Path) -> None:
    from auditledger._ids import uuid7_batch
    from auditledger._nats.publisher import NatsSink
    from auditledger._write.capture import capture_event
    from auditledger._write.prepare import Limits, Preparer

    events = [
        capture_event(1_700_000_000_000_000_000 + i, "auth.login", f"U{i}", WorkspaceRef("T9"),
                      None, None, None, None, None, None, None)
        for i in range(300)
    ]  # fmt: skip
    ids = uuid7_batch([e[0] for e in events])
    rows, _ = Preparer(Limits()).prepare(ids, events)
    sink = NatsSink(cluster.nats.url, timeout=5)
    try:
        sink.write(rows, [], replay=False)
        sink.write(rows, [], replay=True)  # inside the window: the server drops them
        assert cluster.nats.backlog() == 1  # one message: one workspace, 300 events
        cluster.ingester()
        cluster.wait_stored(300)
        sink.write(rows[:100], [], replay=True)  # stored already: the ingester drops them
        assert cluster.nats.backlog() <= 100
    finally:
        sink.close()
    wait_until(lambda: cluster.nats.backlog() == 0, 30, "the repeats to be consumed")
    cluster.check(300)


def test_direct_writers_and_ingesters_share_chains_without_forking(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.ingester()
    publishers = cluster.publishers(2, 1000)
    with AuditLogger(cluster.db_url, spool_dir=tmp_path / "direct") as direct:
        for i in range(1000):
            direct.log_audit_event(
                "auth.logout", user_id=f"d{i}", workspace_id=WorkspaceRef(f"T{i % 5}")
            )
        assert direct.flush(60)
    wait_all(publishers)
    cluster.wait_stored(3000)
    cluster.check(3000)


def _prepared(count: int, workspaces: int) -> list[Any]:
    from auditledger._ids import uuid7_batch
    from auditledger._write.capture import capture_event
    from auditledger._write.prepare import Limits, Preparer

    events = [
        capture_event(1_700_000_000_000_000_000 + i, "auth.login", f"U{i}",
                      WorkspaceRef(f"T{i % workspaces}"), None, None, None, None, None, None,
                      None)
        for i in range(count)
    ]  # fmt: skip
    rows, _ = Preparer(Limits()).prepare(uuid7_batch([e[0] for e in events]), events)
    return rows


def test_the_same_batch_published_twice_is_stored_once(cluster: Cluster) -> None:
    """A replay of a spooled batch makes the same messages (same Nats-Msg-Id): the server
    drops them all, also when a batch spans several messages."""
    from auditledger._nats.publisher import NatsSink, messages

    rows = _prepared(1500, 3)
    expected = len(messages(rows, [], 8))
    assert 3 <= expected < 1500  # many events a message, at most 500 each
    sink = NatsSink(cluster.nats.url, timeout=5)
    try:
        sink.write(rows, [], replay=False)
        assert cluster.nats.backlog() == expected
        sink.write(rows, [], replay=True)
        assert cluster.nats.backlog() == expected
    finally:
        sink.close()
    cluster.ingester()
    cluster.wait_stored(1500)
    cluster.check(1500)


def test_a_batch_partly_stored_before_its_ingester_died_is_completed(cluster: Cluster) -> None:
    """An ingester may commit part of a message and die before acknowledging it (it stores
    a batch the database refuses part of in several transactions, halving it). Simulated by
    committing part of the batch straight to the database: the redelivered message is stored
    for the rest, and nothing twice."""
    from auditledger._nats.publisher import NatsSink, messages
    from auditledger._sinks.postgres import PostgresSink

    rows = _prepared(600, 2)
    direct = PostgresSink(conninfo(cluster.db_url), connect_timeout=5)
    try:
        direct.write(rows[100:400], [], replay=False)
    finally:
        direct.close()
    sink = NatsSink(cluster.nats.url, timeout=5)
    try:
        sink.write(rows, [], replay=False)
    finally:
        sink.close()
    assert cluster.nats.backlog() == len(messages(rows, [], 8)) < 600
    cluster.ingester()
    cluster.wait_stored(600)
    cluster.check(600)


def _ingest_hand_made(
    cluster: Cluster, items: list[bytes], ids: list[Any], stored: int, quarantined: int
) -> dict[Any, str]:
    """Publishes one message of these encoded events to T0's partition, as a hand-made one
    would be; once an ingester has stored and quarantined what is expected, checks the
    database (counts, verify) and returns each quarantine row's reason by id."""
    from auditledger._nats.partitions import partition_of, subject
    from auditledger._nats.publisher import message_id
    from auditledger._nats.wire import encode_batch

    target = subject(8, partition_of(WorkspaceRef("T0"), 8))
    cluster.nats.run(_publish_raw, [(target, encode_batch(items, []), message_id(ids))])
    cluster.ingester()
    wait_until(lambda: counts(cluster.db_url)[2] == quarantined, 60, "the quarantine rows")
    cluster.wait_stored(stored)
    cluster.check(stored, quarantined=quarantined)
    with psycopg.connect(conninfo(cluster.db_url)) as conn:
        return dict(conn.execute("SELECT id, reason FROM audit_quarantine").fetchall())


def test_a_poison_event_inside_a_batch_of_good_ones(cluster: Cluster) -> None:
    """Two events of a message cannot be read and the database refuses a third: all three are
    quarantined (under their own ids), the others are stored."""
    import uuid

    import orjson

    from auditledger._nats.wire import encode_item

    rows = _prepared(50, 1)
    # Another has a JSON column that is not JSON (the canonical form could not parse it).
    rows[30] = (*rows[30][:8], '{"not": json', *rows[30][9:])
    # And one reads well but the database refuses it (a NUL in text), even kept whole.
    rows[40] = (rows[40][0], "U\x00nul", *rows[40][2:])
    poison_id = uuid.uuid4()
    poison = orjson.dumps([str(poison_id), "U1", None, None, None, 42, *[None] * 7])
    items = [encode_item(r) for r in rows]
    items.insert(20, poison)
    ids = [r[0] for r in rows[:20]] + [poison_id] + [r[0] for r in rows[20:]]
    kept = _ingest_hand_made(cluster, items, ids, stored=48, quarantined=3)
    assert kept[poison_id].startswith("unreadable stream message")
    assert kept[rows[30][0]].startswith("unreadable stream message")
    assert kept[rows[40][0]].startswith("refused by the database")


def test_json_values_that_are_json_only_together_are_not_stored(cluster: Cluster) -> None:
    """An ingester checks the JSON values of a message in one parse (joined as an array).
    Pieces that are not JSON alone but make JSON together (``[1``, ``2]``, ``3,4``) pass that
    check; the database refuses each, so the event is quarantined, not stored, and the
    events around it are."""
    from auditledger._nats.wire import encode_item

    rows = _prepared(6, 1)
    rows[2] = (*rows[2][:8], "[1", "2]", "3,4", *rows[2][11:])
    items = [encode_item(r) for r in rows]
    kept = _ingest_hand_made(cluster, items, [r[0] for r in rows], stored=5, quarantined=1)
    assert list(kept) == [rows[2][0]]
    assert kept[rows[2][0]].startswith("refused by the database")


def test_a_hand_made_erasure_event_is_refused(cluster: Cluster) -> None:
    """The publisher quarantines an application's gdpr.* and retention.* actions; a message
    made by hand skips the publisher, so the ingester refuses them too: a forged gdpr.erasure
    event would let verify accept removed values. audit_log.* (records of reads, which a
    viewer may publish through a NATS logger) is stored."""
    from auditledger._nats.wire import encode_item

    rows = _prepared(6, 1)
    forged = {
        1: "gdpr.erasure",
        2: "retention.applied",
        3: "gdpr.subject_export",
    }
    for index, action in forged.items():
        rows[index] = (*rows[index][:5], action, *rows[index][6:])
    rows[4] = (*rows[4][:5], "audit_log.viewed", *rows[4][6:])
    items = [encode_item(r) for r in rows]
    kept = _ingest_hand_made(cluster, items, [r[0] for r in rows], stored=3, quarantined=3)
    with psycopg.connect(conninfo(cluster.db_url)) as conn:
        stored = {r[0] for r in conn.execute("SELECT action FROM audit_logs").fetchall()}
    for index, action in forged.items():
        head = action.split(".")[0]
        assert kept[rows[index][0]] == (
            f"refused stream message (action {head}.* is written by auditledger only)"
        )
    assert stored == {"auth.login", "audit_log.viewed"}


def test_partitions_given_up_stop_without_waiting_for_their_fetch(
    nats_server: NatsServer, pg_url: str
) -> None:
    """An ingester hands partitions over (to one that joins, or at shutdown) at once: an idle
    partition's fetch may wait a whole fetch_timeout, which a hand-over must not wait for."""
    import asyncio
    import time

    from auditledger._nats._client import connect, nats
    from auditledger._nats.ingester import Ingester, IngestOptions
    from auditledger._nats.ownership import IngestSink
    from auditledger._nats.partitions import STREAM, consumer_name

    nats_server.setup(partitions=4)
    sink = IngestSink(conninfo(pg_url), connect_timeout=10.0)
    ingester = Ingester(nats_server.url, sink, IngestOptions(fetch_timeout=120.0))

    async def fetching(nc: Any) -> bool:
        """Whether every partition's consumer has a fetch waiting on the server."""
        if len(ingester.owned) < 4:
            return False
        js = nc.jetstream()
        try:
            infos = [await js.consumer_info(STREAM, consumer_name(p)) for p in range(4)]
        except nats.js.errors.NotFoundError:  # a consumer not created yet
            return False
        return all(info.num_waiting >= 1 for info in infos)

    async def seconds_to_stop() -> float:
        nc = await connect(nats_server.url, timeout=5, name="test", pending_size=2**20)
        stop = asyncio.Event()
        running = asyncio.create_task(ingester.run(stop))
        try:
            deadline = time.monotonic() + 30
            while not await fetching(nc):
                assert time.monotonic() < deadline, "the ingester never waited in its fetches"
                await asyncio.sleep(0.05)
            started = time.monotonic()
            stop.set()
            await asyncio.wait_for(running, 150)
            return time.monotonic() - started
        finally:
            stop.set()
            await nc.close()

    # Each fetch waits up to 120 s on the empty stream; the stop used to wait for them.
    assert asyncio.run(seconds_to_stop()) < 10


def test_json_of_a_hand_made_message_is_stored_in_the_form_verify_rebuilds(
    cluster: Cluster,
) -> None:
    """Publishers send JSON values in one spelling (sorted keys, no spaces, no escapes that
    are not needed), the one the canonical form commits to and `verify` rebuilds from jsonb.
    A hand-made message may spell the same value otherwise: it is stored in that spelling,
    never committed in another (which `verify` would report as tampering)."""
    from auditledger._nats.partitions import partition_of, subject
    from auditledger._nats.publisher import message_id
    from auditledger._nats.wire import encode_batch, encode_item

    rows = _prepared(3, 1)
    spelt = ['{"b": 1, "a": "\\u00e9"}', '[1.0, {"z": null, "y": [true]}]', '"caf\\u00e9"']
    rows = [(*row[:8], text, *row[9:]) for row, text in zip(rows, spelt, strict=True)]
    body = encode_batch([encode_item(r) for r in rows], [])
    target = subject(8, partition_of(WorkspaceRef("T0"), 8))
    cluster.nats.run(_publish_raw, [(target, body, message_id([r[0] for r in rows]))])
    cluster.ingester()
    cluster.wait_stored(3)
    cluster.check(3)  # verify exits 0: every value is committed in the form it rebuilds
    with psycopg.connect(conninfo(cluster.db_url)) as conn:
        stored = {r[0]: r[1] for r in conn.execute("SELECT id, details FROM audit_logs")}
    assert [stored[r[0]] for r in rows] == [
        {"a": "é", "b": 1},
        [1.0, {"y": [True], "z": None}],
        "café",
    ]


def _with_key(key: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AUDITLEDGER_NATS_KEY"}
    return env if key is None else {**env, "AUDITLEDGER_NATS_KEY": key}


async def _publish_signed(nc: Any, subject: str, body: bytes, msg_id: str, key: str) -> None:
    from auditledger._nats.auth import parse_keys
    from auditledger._nats.publisher import _headers_for
    from auditledger._nats.wire import compress

    data = compress(body)
    headers = _headers_for(parse_keys(key)[0], subject, msg_id, data)
    await nc.jetstream().publish(subject, data, headers=headers)


def test_with_a_publisher_key_only_signed_messages_are_stored(cluster: Cluster) -> None:
    """Publishers and ingesters share a key: what the publishers sent is stored and verifies.
    Two well-formed messages of events are refused, one unsigned and one signed with a key
    the ingester does not hold: a digest each, never their events."""
    from auditledger._nats.auth import new_key
    from auditledger._nats.partitions import partition_of, subject
    from auditledger._nats.publisher import message_id
    from auditledger._nats.wire import encode_batch, encode_item

    key = new_key()
    target = subject(8, partition_of(WorkspaceRef("T0"), 8))
    forged, other = _prepared(10, 1), _prepared(10, 1)
    cluster.nats.run(
        _publish_raw,
        [
            (
                target,
                encode_batch([encode_item(r) for r in forged], []),
                message_id([r[0] for r in forged]),
            )
        ],
    )
    body = encode_batch([encode_item(r) for r in other], [])
    cluster.nats.run(_publish_signed, target, body, message_id([r[0] for r in other]), new_key())
    log = cluster.tmp / "ingest.log"
    cluster.ingester(env=_with_key(key), log=log)
    wait_all(cluster.publishers(2, 300, env=_with_key(key)))
    wait_until(lambda: counts(cluster.db_url)[2] == 2, 60, "the quarantine rows")
    cluster.wait_stored(600)
    cluster.check(600, quarantined=2)
    cluster.stop()
    said = log.read_text()
    assert "refused stream messages (see quarantine)" in said  # an operator is told
    # Its start-up line says what it stores, on one line even in a file (log collectors).
    assert "PostgreSQL (signed messages only); SIGTERM or Ctrl-C stops\n" in said
    assert key not in said
    with psycopg.connect(conninfo(cluster.db_url)) as conn:
        reasons = sorted(r[0] for r in conn.execute("SELECT reason FROM audit_quarantine"))
        stored = {r[0] for r in conn.execute("SELECT id FROM audit_logs")}
    assert reasons == [
        "refused stream message (not signed with a publisher key)",
        "refused stream message (signed with a key this ingester does not hold)",
    ]
    assert not stored & {r[0] for r in forged + other}


def test_an_ingester_without_a_key_stores_what_signed_publishers_send(cluster: Cluster) -> None:
    """The order of a rolling upgrade: publishers get the key first; ingesters without one
    still check and store every well-formed message."""
    from auditledger._nats.auth import new_key

    cluster.ingester(env=_with_key(None))
    wait_all(cluster.publishers(1, 300, env=_with_key(new_key())))
    cluster.wait_stored(300)
    cluster.check(300)


def _run_ingester_until(ingester: Any, done: Any, timeout: float = 60) -> None:
    """Runs an in-process ingester until ``done()`` (checked between its batches) holds."""
    import asyncio
    import time

    async def main() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(ingester.run(stop))
        deadline = time.monotonic() + timeout
        try:
            while not done():
                assert not running.done(), "the ingester stopped"
                assert time.monotonic() < deadline, "the ingester did not store everything"
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.wait_for(running, 30)

    asyncio.run(main())


def _publish_in_small_batches(cluster: Cluster, count: int) -> None:
    """``count`` events over 3 workspaces, user id = their order, in batches of 7 events:
    hundreds of stream messages of a few events each."""
    with AuditLogger(nats_url=cluster.nats.url, spool_dir=cluster.tmp / "s", batch_size=7) as audit:
        for i in range(count):
            audit.log_audit_event(
                "auth.login", user_id=str(i), workspace_id=WorkspaceRef(f"T{i % 3}")
            )
        assert audit.flush(60)


def _assert_chains_in_logged_order(url: str, count: int) -> None:
    """Each of the 3 chains holds a third of the events, in the order they were logged."""
    with psycopg.connect(conninfo(url)) as conn:
        chains: dict[Any, list[int]] = {}
        for chain, user in conn.execute(
            "SELECT chain_id, user_id FROM audit_logs ORDER BY chain_id, chain_seq"
        ):
            chains.setdefault(chain, []).append(int(user))
    assert sorted(len(v) for v in chains.values()) == [count // 3] * 3
    for logged in chains.values():
        assert logged == sorted(logged)


def test_batches_in_flight_keep_each_chain_in_stream_order(cluster: Cluster) -> None:
    """A partition hands its next batches to the store before the first has committed: many
    small messages and tiny groups put several of them in flight at once, and every chain
    still holds its workspace's events in the order they were logged."""
    from auditledger._nats.ingester import Ingester, IngestOptions
    from auditledger._nats.ownership import IngestSink

    count = 1500
    _publish_in_small_batches(cluster, count)
    sink = IngestSink(conninfo(cluster.db_url), connect_timeout=10.0)
    # Groups of about 5 events, 2 messages a fetch: one group each few messages.
    ingester = Ingester(cluster.nats.url, sink, IngestOptions(batch_size=1, fetch_messages=2))
    _run_ingester_until(ingester, lambda: ingester.stats.stored >= count)
    assert ingester.stats.transactions > 100
    _assert_chains_in_logged_order(cluster.db_url, count)
    cluster.check(count)


def test_a_consumer_gone_while_connected_is_created_again(cluster: Cluster) -> None:
    """A consumer deleted by hand, or lost with the memory of the servers that held its
    state, while the ingester stays connected: fetching from it times out empty, as from an
    idle one. The ingester asks after ``consumer_check`` seconds without messages, creates
    it again, and what was published meanwhile is stored."""
    import threading

    from auditledger._nats.ingester import Ingester, IngestOptions
    from auditledger._nats.ownership import IngestSink
    from auditledger._nats.partitions import STREAM

    async def delete_consumers(nc: Any) -> int:
        jsm = nc.jetstream()
        names = [info.name for info in await jsm.consumers_info(STREAM)]
        for name in names:
            await jsm.delete_consumer(STREAM, name)
        return len(names)

    deleted: list[int] = []

    def publish(first: int) -> None:
        with AuditLogger(nats_url=cluster.nats.url, spool_dir=cluster.tmp / "s") as audit:
            for i in range(first, first + 300):
                audit.log_audit_event(
                    "auth.login", user_id=str(i), workspace_id=WorkspaceRef(f"T{i % 3}")
                )
            assert audit.flush(60)

    def done() -> bool:
        if deleted:
            return ingester.stats.stored >= 600
        if ingester.stats.stored >= 300:
            # From another thread: this one runs the ingester's event loop.
            worker = threading.Thread(
                target=lambda: deleted.append(cluster.nats.run(delete_consumers))
            )
            worker.start()
            worker.join()
            publish(300)
        return False

    publish(0)
    sink = IngestSink(conninfo(cluster.db_url), connect_timeout=10.0)
    options = IngestOptions(fetch_timeout=0.2, consumer_check=0.5)
    ingester = Ingester(cluster.nats.url, sink, options)
    _run_ingester_until(ingester, done, timeout=30)
    assert deleted == [8]  # every partition's consumer (the cluster has 8)
    cluster.check(600)


def _fetched_messages(cluster: Cluster, messages: int) -> list[Any]:
    """Stream messages of one workspace's events (5 a message), fetched as an ingester
    would, not acknowledged."""
    from auditledger._nats.partitions import STREAM

    logger = AuditLogger(nats_url=cluster.nats.url, spool_dir=cluster.tmp / "s", batch_size=5)
    with logger as audit:
        for i in range(5 * messages):
            audit.log_audit_event("auth.login", user_id=str(i), workspace_id=WorkspaceRef("T0"))
        assert audit.flush(60)

    async def fetched(nc: Any) -> list[Any]:
        sub = await nc.jetstream().pull_subscribe("audit.v1.>", "test", stream=STREAM)
        return list(await sub.fetch(messages, timeout=5))

    msgs: list[Any] = cluster.nats.run(fetched)
    assert len(msgs) == messages
    return msgs


def test_a_failed_group_fails_the_batches_waiting_behind_it(cluster: Cluster) -> None:
    """Batches waiting behind a group that fails may come from the same partitions: stored,
    they would be chained before it once it is delivered again. They are refused too (not
    acknowledged, so delivered again, in order)."""
    import asyncio

    from auditledger._nats.group import GroupStore
    from auditledger._nats.ownership import IngestSink

    msgs = _fetched_messages(cluster, 4)
    sink = IngestSink(conninfo(cluster.db_url), connect_timeout=10.0)
    reports: list[str] = []

    async def submitted() -> list[bool]:
        store = GroupStore(sink, asyncio.Lock(), lambda _k, m: reports.append(m))
        session = await asyncio.to_thread(sink.connect)
        # The first batch's session is gone (as after a reconnection): its group fails.
        outcomes = [store.submit(msgs[:1], session - 1)]
        outcomes += [store.submit([m], session) for m in msgs[1:]]
        return list(await asyncio.gather(*outcomes))

    try:
        assert asyncio.run(submitted()) == [False, False, False, False]
    finally:
        sink.close()
    assert counts(cluster.db_url) == (0, 0, 0)
    assert any("session-lost" in m for m in reports)


@pytest.mark.parametrize("started", [True, False], ids=["waiting-for-the-session", "not-begun"])
def test_batches_handed_in_are_never_left_waiting_when_the_store_task_ends(
    cluster: Cluster, started: bool
) -> None:
    """The task that stores the groups can end early (cancelled at shutdown, or by a bug):
    every batch handed in is then told "not stored", so no partition waits for ever. Also
    when it is cancelled before it ever ran (its own clean-up never runs then)."""
    import asyncio

    from auditledger._nats.group import GroupStore
    from auditledger._nats.ownership import IngestSink

    msgs = _fetched_messages(cluster, 2)
    sink = IngestSink(conninfo(cluster.db_url), connect_timeout=10.0)

    async def outcomes() -> list[bool]:
        db = asyncio.Lock()
        store = GroupStore(sink, db, lambda _k, _m: None)
        session = await asyncio.to_thread(sink.connect)
        async with db:  # the session busy elsewhere: the store task waits for it
            handed = [store.submit([m], session) for m in msgs]
            if started:
                await asyncio.sleep(0)
            assert store._storer is not None
            store._storer.cancel()
            return list(await asyncio.wait_for(asyncio.gather(*handed), 10))

    try:
        assert asyncio.run(outcomes()) == [False, False]
    finally:
        sink.close()
    assert counts(cluster.db_url) == (0, 0, 0)


def test_batches_in_flight_keep_stream_order_through_a_lost_session(
    cluster: Cluster, pg_url: str
) -> None:
    """The database connection cut while batches are in flight: the groups being stored
    fail, and with them every batch waiting behind them, so when the partitions are taken
    again each chain still holds its workspace's events in the order they were logged."""
    import time

    from auditledger._nats.ingester import Ingester, IngestOptions
    from auditledger._nats.ownership import IngestSink

    count = 1500
    _publish_in_small_batches(cluster, count)
    url = make_url(pg_url)
    with TcpProxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        sink = IngestSink(conninfo(via(proxy, pg_url)), connect_timeout=10.0)
        ingester = Ingester(cluster.nats.url, sink, IngestOptions(batch_size=1, fetch_messages=2))
        cut: list[float] = []

        def done() -> bool:
            stored = counts(pg_url)[0]
            if not cut and stored >= 300:
                proxy.refuse()  # mid-stream: groups in flight fail with the session
                cut.append(time.monotonic())
            elif len(cut) == 1 and time.monotonic() - cut[0] > 1.0:
                assert counts(pg_url)[0] < count
                proxy.restore()
                cut.append(time.monotonic())
            return stored >= count

        _run_ingester_until(ingester, done)
    assert len(cut) == 2
    _assert_chains_in_logged_order(pg_url, count)
    cluster.check(count)
