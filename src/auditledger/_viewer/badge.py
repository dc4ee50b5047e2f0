"""The chain badge: a verify of each workspace run in the background and cached.

Verifying reads a whole chain; a page must never wait for that. Pages only read the cache
(a workspace seen for the first time shows "checking"); one thread re-verifies the workspaces
that pages asked about, at most every ``interval`` seconds. ``refresh()`` checks them now.

Each verify runs in a child process: it is CPU-bound Python, and in a thread of the server it
would hold the GIL against every request for as long as a big chain takes to walk.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from .._db.schema import audit_logs

log = logging.getLogger("auditledger")

# None is the key of the whole log (the operator's view of every workspace).
BadgeKey = uuid.UUID | None


@dataclass(frozen=True)
class Badge:
    state: str  # "intact", "problems" or "failed"
    problems: int = 0
    up_to: datetime | None = None  # the newest event the check covered
    signatures_checked: bool = False
    first_problem: str = ""
    checked_at: float = 0.0


class BadgeCache:
    def __init__(
        self,
        database_url: str,
        engine: Engine,
        public_keys: Sequence[str | os.PathLike[str]] = (),
        interval: float = 60.0,
    ) -> None:
        self._url = database_url
        self._engine = engine
        self._keys = list(public_keys)
        self._interval = interval
        self._badges: dict[BadgeKey, Badge] = {}
        self._wanted: set[BadgeKey] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._children: set[Any] = set()

    def get(self, key: BadgeKey) -> Badge | None:
        """The cached badge (None until the first check); asks the thread to check ``key``."""
        with self._lock:
            badge = self._badges.get(key)
            new = key not in self._wanted
            if new:
                self._wanted.add(key)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="auditledger-viewer-badge", daemon=True
                )
                self._thread.start()
        if new:
            self._wake.set()
        return badge

    def refresh(self) -> None:
        """Check every workspace a page asked about, now, in the caller's thread."""
        with self._lock:
            keys = list(self._wanted)
        for key in keys:
            self._check(key)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        with self._lock:
            children = list(self._children)
        for child in children:  # a verify of a big chain is not worth waiting for at shutdown
            child.terminate()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                due = [
                    k
                    for k in self._wanted
                    if k not in self._badges
                    or time.monotonic() - self._badges[k].checked_at >= self._interval
                ]
            for key in due:
                if self._stop.is_set():
                    return
                self._check(key)
            self._wake.wait(self._interval)
            self._wake.clear()

    def _check(self, key: BadgeKey) -> None:
        try:
            # Read before verifying: every event up to this time is in the chain walked next.
            query = select(func.max(audit_logs.c.created_at))
            if key is not None:
                query = query.where(audit_logs.c.chain_id == key)
            with self._engine.connect() as conn:
                newest = conn.execute(query).scalar()
            result = self._verify_in_child(key)
        except Exception as exc:  # noqa: BLE001 - a badge, never a crash
            log.warning("auditledger viewer: chain check failed (%s)", type(exc).__name__)
            result = None
        if result is None:
            badge = Badge("failed", checked_at=time.monotonic())
        else:
            count, first = result
            badge = Badge(
                "problems" if count else "intact",
                problems=count,
                up_to=newest,
                signatures_checked=bool(self._keys),
                first_problem=first,
                checked_at=time.monotonic(),
            )
        with self._lock:
            self._badges[key] = badge

    def _verify_in_child(self, key: BadgeKey) -> tuple[int, str] | None:
        context = _context()
        receiver, sender = context.Pipe(duplex=False)
        # The URL travels through the pipe, never the command line (it may hold a password).
        child = context.Process(
            target=verify_child,
            args=(self._url, self._keys, key, sender),
            name="auditledger-viewer-verify",
            daemon=True,
        )
        with self._lock:
            if self._stop.is_set():
                return None
            child.start()
            self._children.add(child)
        sender.close()
        try:
            result: tuple[int, str] | None = receiver.recv()
        except EOFError:  # terminated by close(), or died
            result = None
        finally:
            receiver.close()
            child.join()
            with self._lock:
                self._children.discard(child)
        return result


def _context() -> Any:
    """A fork server: fork is unsafe with threads running, and spawn would re-import the
    library for every check; the server forks each verify from a clean, preloaded process."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["auditledger._read.verify.run"])
    return context


def verify_child(url: str, keys: list[str], key: BadgeKey, sender: Any) -> None:
    """In the child: verify one chain, send (number of problems, the first one's detail)."""
    from .._read.verify.report import BAD_SIGNATURE
    from .._read.verify.run import verify_log

    try:
        report = verify_log(url, public_keys=keys, workspace_id=key, workers=1)
    except Exception as exc:  # noqa: BLE001 - reported as a failed check
        log.warning("auditledger viewer: chain check failed (%s)", type(exc).__name__)
        sender.send(None)
        return
    # Without keys no signature can hold: that is "not checked", not tampering.
    problems = [p for p in report.problems if keys or p.kind != BAD_SIGNATURE]
    sender.send((len(problems), problems[0].detail if problems else ""))
    sender.close()
