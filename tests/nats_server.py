"""A nats-server of the test's own (never the shared one): free port, temporary store, and
the means to kill it and start it again on the same store."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class NatsServer:
    def __init__(self, store: Path, *, jetstream: bool = True) -> None:
        self.store = store
        self.jetstream = jetstream
        self.port = _free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        js = ["-js"] if self.jetstream else []
        self._proc = subprocess.Popen(
            [NATS_SERVER, *js, "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("nats-server did not start")

    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def run(self, coro_fn: Any, *args: Any) -> Any:
        """Run ``coro_fn(nc, *args)`` on a fresh connection to this server."""
        from auditledger._nats._client import connect

        async def main() -> Any:
            nc = await connect(self.url, timeout=5, name="test", pending_size=2**22)
            try:
                return await coro_fn(nc, *args)
            finally:
                await nc.close()

        return asyncio.run(main())

    def setup(self, partitions: int = 4, max_bytes: int = 64 * 1024**2) -> None:
        from auditledger._nats.stream import StreamSettings, setup_stream

        self.run(setup_stream, StreamSettings(partitions=partitions, max_bytes=max_bytes))

    def backlog(self) -> int:
        from auditledger._nats.stream import stream_backlog

        found = self.run(stream_backlog)
        return 0 if found is None else int(found.messages)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    if not Path(NATS_SERVER).exists():
        pytest.fail("nats-server is not installed (apt-get install nats-server)")
    server = NatsServer(tmp_path / "nats-store")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def wait_until(check: Any, timeout: float = 30.0, what: str = "condition") -> None:
    """For work done by other processes (ingesters), which have no flush() to call."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)
