"""nats-py, imported only here, with a clear error when the ``nats`` extra is missing; and the
event loop thread that synchronous code (the writer thread, the CLI) runs its coroutines on."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .._errors import MissingExtraError
from .urls import server_urls

try:
    import nats
    import nats.errors
    import nats.js.errors
    from nats.aio.client import Client
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("nats", "nats-py") from exc

__all__ = ["Client", "LoopThread", "connect", "nats"]

T = TypeVar("T")


async def _quiet(_: Exception) -> None:
    """nats-py's default error callback logs every reconnect attempt with the server's URL;
    the writer and the ingester report failures themselves, once a minute at most."""


async def connect(
    url: str,
    *,
    timeout: float,
    name: str,
    pending_size: int,
    give_up: float | None = None,
    reconnected: Callable[[], Coroutine[Any, Any, None]] | None = None,
    failed: Callable[[Exception], Coroutine[Any, Any, None]] | None = None,
) -> Client:
    """A connection that keeps reconnecting (never gives up while the process lives).

    nats-py also retries the first connection for ever; ``give_up`` bounds that (TimeoutError)
    for commands that should say the server is unreachable instead of waiting.
    ``reconnected`` is called each time the connection is re-established; ``failed`` with
    each error (an attempt refused, the connection lost), to report without the URL.
    """
    extra: dict[str, Any] = {} if reconnected is None else {"reconnected_cb": reconnected}
    connecting = nats.connect(
        server_urls(url),
        name=name,
        connect_timeout=max(1, int(timeout)),
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        pending_size=pending_size,
        error_cb=failed or _quiet,
        **extra,
    )
    if give_up is None:
        return await connecting
    return await asyncio.wait_for(connecting, give_up)


class LoopThread:
    """An asyncio loop on a daemon thread, for callers that are not coroutines themselves."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(
        self,
        coro: Coroutine[Any, Any, T],
        timeout: float,
        meanwhile: Callable[[], None] | None = None,
    ) -> T:
        """Run ``coro`` on the loop (and ``meanwhile`` on this thread while it runs); raises
        TimeoutError (and cancels it) after ``timeout``."""
        started = time.monotonic()
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        if meanwhile is not None:
            meanwhile()
            timeout = max(0.0, timeout - (time.monotonic() - started))
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(2.0)
        if not self._thread.is_alive():
            self.loop.close()
