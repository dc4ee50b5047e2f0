"""``auditledger nats setup`` and ``auditledger ingest``: the scale-out commands."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .._errors import AuditLedgerError
from ._app import ENV_DATABASE_URL, ENV_NATS_KEY, ENV_NATS_URL, app, console, err_console, fail

if TYPE_CHECKING:  # nats-py is imported only when a command needs it
    from .._nats.ingester import Ingester
    from .._nats.stream import SetupResult, StreamSettings

nats_app = typer.Typer(help="The NATS JetStream stream that apps publish to.", no_args_is_help=True)
app.add_typer(nats_app, name="nats")

NatsUrl = Annotated[
    str,
    typer.Option(
        "--nats-url",
        envvar=ENV_NATS_URL,
        show_envvar=True,
        help="nats://host:4222 (a cluster: its servers separated by commas)",
    ),
]


def _checked(url: str) -> str:
    from .._nats.settings import check_nats_url

    try:
        check_nats_url(url)
    except AuditLedgerError as exc:
        raise fail(str(exc)) from exc
    return url


@nats_app.command("setup")
def setup(
    nats_url: NatsUrl,
    partitions: Annotated[
        int | None,
        typer.Option(help="Ingest parallelism cap (fixed hash). New stream: 32; else kept."),
    ] = None,
    replicas: Annotated[
        int | None, typer.Option(help="1, or 3 in production (a cluster). New: 1; else kept.")
    ] = None,
    max_bytes: Annotated[
        int | None,
        typer.Option(help="Stream size cap; when full, publishers spool. New: 10 GiB; else kept."),
    ] = None,
) -> None:
    """Create the stream, or update what is given (a re-run changes nothing else)."""
    import asyncio

    url = _checked(nats_url)
    try:
        from .._nats.stream import StreamSettings

        settings = StreamSettings(partitions, replicas, max_bytes)
        settings.check()
        result = asyncio.run(_setup(url, settings))
    except AuditLedgerError as exc:
        raise fail(str(exc)) from exc
    except (OSError, TimeoutError) as exc:
        raise fail(f"cannot reach the NATS server ({type(exc).__name__})") from exc
    except Exception as exc:
        raise fail(_refusal(exc)) from exc
    if result.created:
        verb = "created"
    elif result.changes:
        verb = "updated (" + ", ".join(result.changes) + ")"
    else:
        verb = "up to date"
    console.print(
        f"stream AUDIT {verb}: {result.partitions} partitions, {result.replicas} replica(s), "
        f"max {result.max_bytes} bytes, work-queue retention, discard new, 2 min dedup window",
        soft_wrap=True,
    )
    if any(c.startswith("partitions") for c in result.changes):
        console.print(
            "running ingesters move to the new partitions within seconds; publishers at "
            "their next publish, which the stream refuses until then (they spool meanwhile)",
            soft_wrap=True,
        )


def _refusal(exc: Exception) -> str:
    from .._nats._client import nats

    if isinstance(exc, nats.js.errors.ServiceUnavailableError):
        return "the NATS server does not offer JetStream (start nats-server with -js)"
    return f"the NATS server refused the stream ({type(exc).__name__}: {exc})"


async def _setup(url: str, settings: StreamSettings) -> SetupResult:
    from .._nats._client import connect
    from .._nats.stream import setup_stream

    nc = await connect(url, timeout=5, name="auditledger-setup", pending_size=2**20, give_up=10)
    try:
        return await setup_stream(nc, settings)
    finally:
        await nc.close()


@nats_app.command("new-key")
def new_key() -> None:
    """Print a fresh publisher key: give it to publishers and ingesters as AUDITLEDGER_NATS_KEY."""
    from .._nats.auth import new_key as make

    console.print(make(), soft_wrap=True)


@app.command("ingest")
def ingest(
    nats_url: NatsUrl,
    database_url: Annotated[
        str,
        typer.Option("--database-url", envvar=ENV_DATABASE_URL, help="postgresql://..."),
    ],
    signing_key: Annotated[
        Path | None,
        typer.Option(envvar="AUDITLEDGER_SIGNING_KEY", help="Sign checkpoints (Ed25519 key)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Events per fetch and transaction.")] = 1000,
    nats_key: Annotated[
        list[str] | None,
        typer.Option(
            "--nats-key",
            envvar=ENV_NATS_KEY,
            show_envvar=True,
            show_default=False,
            help="Publisher key (repeatable; the variable: keys separated by spaces). "
            "Store only messages signed with one.",
        ),
    ] = None,
) -> None:
    """Store the stream's events in PostgreSQL; run as many as wanted, anywhere."""
    import asyncio

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    try:
        ingester = _make_ingester(
            _checked(nats_url), database_url, signing_key, batch_size, nats_key or []
        )
    except AuditLedgerError as exc:
        raise fail(str(exc)) from exc
    signed = "signed messages only" if ingester.keyed else "every well-formed message"
    # One line each, however narrow the terminal: log collectors read the stream by lines.
    err_console.print(
        f"ingesting from the stream into PostgreSQL ({signed}); SIGTERM or Ctrl-C stops",
        soft_wrap=True,
    )
    _collect_for_a_dedicated_process()
    asyncio.run(_run(ingester))
    stats = ingester.stats
    err_console.print(
        f"stopped: {stats.stored} events stored, {stats.quarantined} quarantined", soft_wrap=True
    )


def _collect_for_a_dedicated_process() -> None:
    """This process only ingests, so its garbage collector is set for that (a library would
    leave its host's alone). What was loaded to start it (some 85,000 objects) lives until it
    stops, yet every full collection walked all of it (50-75 ms, once or twice a 30,000
    events); and a young generation of 700 objects is a fraction of one batch in flight.
    Frozen, and collected every 10,000 allocations: collections took 17 ms of a run of
    30,000 events instead of 82-85 ms, and the ingester's CPU an event fell by 1.4-4.8 µs."""
    import gc

    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def _make_ingester(
    nats_url: str, database_url: str, signing_key: Path | None, batch_size: int, keys: list[str]
) -> Ingester:
    from .._db.urls import is_postgres, libpq_conninfo, normalise_url
    from .._errors import ConfigurationError
    from .._nats.auth import key_ring, parse_keys
    from .._nats.ingester import Ingester, IngestOptions
    from .._nats.ownership import IngestSink

    ring = key_ring(parse_keys(" ".join(keys)))

    if batch_size < 1:
        raise ConfigurationError("--batch-size must be at least 1")
    url = normalise_url(database_url)
    if not is_postgres(url):
        raise ConfigurationError(
            "auditledger ingest stores to PostgreSQL: give a postgresql:// URL"
        )
    sink = IngestSink(libpq_conninfo(url), connect_timeout=10.0)
    if signing_key is not None:
        from .._chain.checkpoints import CheckpointSchedule, Signer

        sink.checkpoint_schedule = CheckpointSchedule(Signer.from_file(signing_key), 300.0)
    return Ingester(nats_url, sink, IngestOptions(batch_size=batch_size, keys=ring))


async def _run(ingester: Ingester) -> None:
    import asyncio

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await ingester.run(stop)
