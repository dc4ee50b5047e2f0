"""``AuditLogger``: the public, fire-and-forget entry point."""

from __future__ import annotations

import asyncio
import atexit
import logging
import multiprocessing.util
import os
import signal
import threading
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from time import time_ns
from types import FrameType, TracebackType
from typing import Any, Self

from .._actions import AuditAction
from .._db.urls import normalise_url, resolve_url, spool_fingerprint
from .._errors import ConfigurationError
from .._nats.settings import publisher_factory, resolve_nats_url
from .._sinks.base import Sink
from .._sinks.factory import sink_factory
from .._write.capture import capture_event, capture_event_guarded
from .._write.options import WriterOptions
from .._write.prepare import Limits, Preparer
from .._write.redact import DEFAULT_REDACT_KEYS, Redactor
from .._write.spool import default_spool_dir
from .._write.stats import AuditStats
from .._write.writer import State, Writer
from .checks import require, require_number, require_spool_dir
from .helpers import AuditHelpers, WorkspaceId

log = logging.getLogger("auditledger")

_loggers: weakref.WeakSet[AuditLogger] = weakref.WeakSet()
_fork_orphans: list[object] = []  # see _after_fork_in_child


class AuditLogger(AuditHelpers):
    """Writes audit events in the background; every method but ``flush``/``close`` is instant.

    >>> audit = AuditLogger("postgresql://app@db/app")      # doctest: +SKIP
    >>> audit.audit_login("U123", workspace_id, ip_address="203.0.113.7")  # doctest: +SKIP

    Options (all keyword-only, checked here so that mistakes fail at start-up):

    - ``queue_size``: events held in memory before callers spill to the spool (10,000).
    - ``batch_size`` / ``flush_interval``: a batch is written when this many events wait, or
      after this many seconds (2,000 / 0.2).
    - ``write_timeout``: client-side deadline for one batch, connecting included (10 s).
    - ``spool_dir``: where events wait when the database cannot take them (a per-user
      folder per database by default); ``spool_max_bytes`` caps it (1 GiB).
    - ``write_ahead``: append every batch to the spool and fsync it before writing it, so that a
      ``SIGKILL`` loses at most about one ``flush_interval`` of events (off).
    - ``max_text_length`` / ``max_json_bytes``: caps for text fields and JSON values.
    - ``redact_keys``: fragments of key names whose values are always redacted.
    - ``shutdown_timeout``: how long interpreter exit may wait for the writer (5 s).
    - ``handle_sigterm``: install a SIGTERM handler that flushes before the process ends.
    - ``signing_key``: path of an Ed25519 private key (``auditledger keys generate``; default
      ``AUDITLEDGER_SIGNING_KEY``): the writer then signs a checkpoint of every chain head
      every ``checkpoint_interval`` seconds (300), idle or not.
    - ``nats_url`` (default ``AUDITLEDGER_NATS_URL`` when no ``database_url`` is given):
      publish to NATS JetStream instead of writing to a database; ``auditledger ingest``
      stores the events. "Written" then means acknowledged by the stream.
    - ``nats_key`` (default ``AUDITLEDGER_NATS_KEY``): sign every stream message with this
      publisher key (``auditledger nats new-key``); ingesters given the same key store only
      signed messages, and skip re-checking their JSON.
    - ``ip_address``: ``"full"`` (default) or ``"truncated"``: only the network is stored
      (IPv4 /24, IPv6 /48), enough to tell a country or an ISP, not a household.
    - ``user_agent``: ``"full"`` (default) or ``"none"``: user agents are not stored.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        queue_size: int = 10_000,
        batch_size: int = 2_000,
        flush_interval: float = 0.2,
        write_timeout: float = 10.0,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int = 1024**3,
        write_ahead: bool = False,
        max_text_length: int = 1024,
        max_json_bytes: int = 65_536,
        redact_keys: Iterable[str] = DEFAULT_REDACT_KEYS,
        shutdown_timeout: float = 5.0,
        handle_sigterm: bool = False,
        signing_key: str | os.PathLike[str] | None = None,
        checkpoint_interval: float = 300.0,
        nats_url: str | None = None,
        nats_key: str | None = None,
        ip_address: str = "full",
        user_agent: str = "full",
    ) -> None:
        nats = resolve_nats_url(nats_url, database_url)
        if nats is not None:
            factory, fingerprint = publisher_factory(nats, write_timeout, signing_key, nats_key)
            self.database_backend = "nats"
        else:
            if nats_key is not None:
                raise ConfigurationError("nats_key applies only with nats_url")
            url = normalise_url(resolve_url(database_url))
            # Raises MissingExtraError at once without psycopg.
            factory = _with_checkpoints(
                sink_factory(url, write_timeout), signing_key, checkpoint_interval
            )
            fingerprint = spool_fingerprint(url)
            self.database_backend = url.get_backend_name()
        self._setup(
            factory,
            Path(spool_dir) if spool_dir is not None else default_spool_dir(fingerprint),
            queue_size=queue_size,
            batch_size=batch_size,
            flush_interval=flush_interval,
            write_timeout=write_timeout,
            spool_max_bytes=spool_max_bytes,
            write_ahead=write_ahead,
            max_text_length=max_text_length,
            max_json_bytes=max_json_bytes,
            redact_keys=redact_keys,
            shutdown_timeout=shutdown_timeout,
            handle_sigterm=handle_sigterm,
            database=fingerprint,
            ip_address=ip_address,
            user_agent=user_agent,
        )

    def _setup(
        self,
        sink_factory: Callable[[], Sink],
        spool_dir: Path,
        *,
        queue_size: int,
        batch_size: int,
        flush_interval: float,
        write_timeout: float,
        spool_max_bytes: int,
        write_ahead: bool,
        max_text_length: int,
        max_json_bytes: int,
        redact_keys: Iterable[str],
        shutdown_timeout: float,
        handle_sigterm: bool,
        database: str = "memory",
        ip_address: str = "full",
        user_agent: str = "full",
    ) -> None:
        require(ip_address in ("full", "truncated"), "ip_address must be 'full' or 'truncated'")
        require(user_agent in ("full", "none"), "user_agent must be 'full' or 'none'")
        require_number("queue_size", queue_size, 1, whole=True)
        require_number("batch_size", batch_size, 1, whole=True)
        require_number("flush_interval", flush_interval, 0, exclusive=True)
        require_number("write_timeout", write_timeout, 0, exclusive=True)
        require_number("spool_max_bytes", spool_max_bytes, 0, whole=True)
        require_number("max_text_length", max_text_length, 16, whole=True)
        require_number("max_json_bytes", max_json_bytes, 1024, whole=True)
        require_number("shutdown_timeout", shutdown_timeout, 0)
        require_spool_dir(spool_dir)
        if isinstance(redact_keys, str):
            raise ConfigurationError("redact_keys takes a list of key fragments, not one string")
        self.shutdown_timeout = shutdown_timeout
        limits = Limits(
            max_text_length,
            max_json_bytes,
            Redactor(redact_keys),
            truncate_ip=ip_address == "truncated",
            keep_user_agent=user_agent == "full",
        )
        self._writer = Writer(
            sink_factory,
            Preparer(limits),
            spool_dir,
            WriterOptions(
                queue_size=queue_size,
                batch_size=batch_size,
                flush_interval=flush_interval,
                write_timeout=write_timeout,
                write_ahead=write_ahead,
                spool_max_bytes=spool_max_bytes,
                database=database,
            ),
        )
        self._submit = self._writer.submit
        _register(self)
        # Started now rather than at the first call, so that a new logger replays what a dead
        # process left in the spool. A forked child starts its own at its first call.
        self._writer.start()
        if handle_sigterm:
            install_sigterm_handler()

    @property
    def spool_dir(self) -> Path:
        return self._writer.spool_dir

    def log_audit_event(
        self,
        action: AuditAction | str,
        *,
        user_id: str | None = None,
        workspace_id: WorkspaceId = None,
        ip_address: str | None = None,
        user_agent: str | None = None,
        resource: str | None = None,
        resource_id: str | None = None,
        details: Any = None,
        previous_value: Any = None,
        new_value: Any = None,
    ) -> None:
        """Record one event. Returns in microseconds; never blocks, never raises."""
        try:
            self._submit(
                capture_event(
                    time_ns(),
                    action,
                    user_id,
                    workspace_id,
                    ip_address,
                    user_agent,
                    resource,
                    resource_id,
                    details,
                    previous_value,
                    new_value,
                )
            )
        except Exception:  # noqa: BLE001 - a log call must never break the caller
            # Built only here: packing the arguments costs the common call ~0.2 µs.
            first = (action, user_id, workspace_id, ip_address, user_agent, resource)
            self._capture_the_hard_way((*first, resource_id, details, previous_value, new_value))

    def _capture_the_hard_way(self, args: tuple[Any, ...]) -> None:
        """A value raised while being captured (a hostile ``__str__``, a dict whose methods
        raise...): capture each value alone, so the event is stored or quarantined with notes
        saying what could not be read; if even that fails, the call is counted as dropped."""
        try:
            self._submit(capture_event_guarded(time_ns(), *args))
        except Exception as exc:  # noqa: BLE001 - counted and reported, never raised
            self._writer.count_uncapturable()
            log.error("auditledger: an event could not be captured (%s)", type(exc).__name__)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event logged before this call is in the database.

        Returns True then, or False when ``timeout`` seconds pass first (the events are not
        lost: they wait in the queue or the spool).
        """
        return self._writer.flush(timeout)

    async def aflush(self, timeout: float = 10.0) -> bool:
        """``flush`` for asyncio code: waits in a worker thread, not on the event loop."""
        return await asyncio.to_thread(self._writer.flush, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Store or spool everything and stop the writer; returns within ``timeout``.

        Returns True when every event reached the database. Events logged after ``close``
        go to the spool, for the next logger on the same spool directory to replay.
        """
        return self._writer.close(self.shutdown_timeout if timeout is None else timeout)

    @property
    def closed(self) -> bool:
        return self._writer.state is State.CLOSED

    def stats(self) -> AuditStats:
        """A snapshot of where every event logged through this logger is."""
        return self._writer.stats()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<AuditLogger {self.database_backend} {self._writer.state.value}>"


# ---- tamper evidence: scheduled checkpoints --------------------------------------------------


def _with_checkpoints(
    factory: Callable[[], Sink],
    signing_key: str | os.PathLike[str] | None,
    interval: float,
) -> Callable[[], Sink]:
    """The sink factory, giving each sink a checkpoint schedule when a signing key is set.

    The key is loaded here, at start-up, so a wrong path fails now and not on the writer.
    """
    from .._chain.checkpoints import ENV_SIGNING_KEY, CheckpointSchedule, Signer

    require(interval > 0, "checkpoint_interval must be positive")
    path = signing_key if signing_key is not None else os.environ.get(ENV_SIGNING_KEY)
    if not path:
        return factory
    signer = Signer.from_file(path)

    def signing_factory() -> Sink:
        sink = factory()
        sink.checkpoint_schedule = CheckpointSchedule(signer, interval)
        return sink

    return signing_factory


# ---- process lifecycle: exit, fork, SIGTERM ------------------------------------------------

_hooks_lock = threading.Lock()
_hooks_installed = False


def _register(logger: AuditLogger) -> None:
    global _hooks_installed
    with _hooks_lock:
        _loggers.add(logger)
        if _hooks_installed:
            return
        atexit.register(_close_all)
        # multiprocessing's children end through os._exit, skipping atexit, and their start
        # clears the finalizers they inherited: register one from inside each child instead.
        multiprocessing.util.register_after_fork(_register, _multiprocessing_child)
        os.register_at_fork(
            before=_before_fork,
            after_in_parent=_after_fork_in_parent,
            after_in_child=_after_fork_in_child,
        )
        _hooks_installed = True


def _multiprocessing_child(_: object) -> None:
    multiprocessing.util.Finalize(None, _close_all, exitpriority=10)


def _close_all() -> None:
    """At interpreter exit: write or spool everything, each logger within its own budget."""
    for logger in list(_loggers):
        if not logger.closed:
            try:
                logger.close()
            except Exception as exc:  # noqa: BLE001 - exit must go on
                log.error("auditledger: closing at exit failed (%s)", type(exc).__name__)


def _before_fork() -> None:
    for logger in list(_loggers):
        logger._writer.before_fork()


def _after_fork_in_parent() -> None:
    for logger in list(_loggers):
        logger._writer.after_fork_in_parent()


def _after_fork_in_child() -> None:
    # The child must not use or close the parent's connection (closing would end the
    # parent's session): keep it referenced forever instead of letting GC finalise it.
    for logger in list(_loggers):
        _fork_orphans.extend(logger._writer.after_fork_in_child())


_previous_sigterm: Any = None


def install_sigterm_handler() -> None:
    """Flush every logger on SIGTERM, then let the previous handler act.

    Python's default SIGTERM ends the process without running ``atexit``, so events still
    queued would be lost. Only the main thread can install signal handlers.
    """
    global _previous_sigterm
    if threading.current_thread() is not threading.main_thread():
        raise ConfigurationError("handle_sigterm needs the main thread (signal handlers)")
    current = signal.getsignal(signal.SIGTERM)
    if current is _on_sigterm:
        return
    _previous_sigterm = current
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _close_all()
    previous = _previous_sigterm
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
