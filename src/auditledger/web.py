"""ASGI integration (Starlette, FastAPI): the client's address and user agent on every event.

    from fastapi import Depends, FastAPI
    from auditledger import AuditLogger, BoundAuditLogger
    from auditledger.web import AuditMiddleware, audit_lifespan, get_audit

    logger = AuditLogger("postgresql://app@db/app")
    app = FastAPI(lifespan=audit_lifespan(logger))
    app.add_middleware(AuditMiddleware, logger=logger, trusted_proxies=["10.0.0.0/8"])

    @app.post("/gdpr/export")
    def export(audit: BoundAuditLogger = Depends(get_audit)) -> None:
        audit.audit_data_export(user_id="U123", workspace_id=workspace_id)

The client address is the socket peer unless that peer is one of ``trusted_proxies``; then
``X-Forwarded-For`` is read from the right, hop by hop, up to the first address that is not a
trusted proxy. The leftmost value is whatever the client chose to send and is never taken on
its own word. Needs the ``web`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar, overload

from ._api.default import default_logger
from ._api.default import set_logger as _set_default
from ._api.helpers import AuditHelpers, BoundAuditLogger
from ._api.logger import AuditLogger
from ._errors import ConfigurationError, MissingExtraError

try:
    from starlette.requests import HTTPConnection
    from starlette.types import ASGIApp, Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("web", "starlette") from exc

__all__ = [
    "AuditMiddleware",
    "TrustedProxies",
    "aget_audit",
    "audit_lifespan",
    "client_ip",
    "get_audit",
]

log = logging.getLogger("auditledger")

SCOPE_KEY = "auditledger.audit"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_State = TypeVar("_State")


def _parse_ip(text: str) -> IPAddress | None:
    """An address from a peer or a forwarded hop; ports and IPv6 brackets are tolerated."""
    text = text.strip()
    if text.startswith("["):  # "[2001:db8::1]:443"
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:  # "203.0.113.7:51234"
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d
    return ip


TrustedProxies = Iterable[str | IPAddress | IPNetwork] | str


def _parse_networks(trusted_proxies: TrustedProxies) -> list[IPNetwork]:
    if isinstance(trusted_proxies, str):
        # The shape of uvicorn's --forwarded-allow-ips: "127.0.0.1,10.0.0.0/8".
        trusted_proxies = [p for p in trusted_proxies.split(",") if p.strip()]
    networks: list[IPNetwork] = []
    for item in trusted_proxies:
        if isinstance(item, IPNetwork):
            networks.append(item)
            continue
        try:
            networks.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError as exc:
            raise ConfigurationError(
                f"trusted_proxies: {item!r} is not an IP address or network"
            ) from exc
    return networks


def client_ip(
    peer: str | None,
    forwarded_for: Iterable[str],
    trusted: Callable[[IPAddress], bool],
) -> str | None:
    """The client address: the peer, or the nearest forwarded hop that is not a trusted proxy.

    ``forwarded_for`` holds the X-Forwarded-For header values in the order received. Each proxy
    appends the address it received from, so every hop written by a trusted proxy is as
    reliable as the proxy; the first untrusted hop from the right is the client. A hop that is
    not an address (``unknown``, obfuscated) stops the walk at the last address known good.
    """
    peer_ip = _parse_ip(peer) if peer else None
    if peer_ip is None:
        return None
    if not trusted(peer_ip):
        return str(peer_ip)
    hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
    current = peer_ip
    for hop in reversed(hops):
        hop_ip = _parse_ip(hop)
        if hop_ip is None:
            break
        current = hop_ip
        if not trusted(hop_ip):
            break
    # Reached only through trusted hops: every one of them was written by a trusted proxy.
    return str(current)


class AuditMiddleware:
    """Pure ASGI middleware binding an audit helper to each HTTP and WebSocket connection.

    Pure ASGI rather than ``BaseHTTPMiddleware``, which runs the app in another task and so
    breaks context variables for everything after it. ``trusted_proxies`` takes addresses and
    networks (``["10.0.0.0/8", "2001:db8::/32"]``, or one comma-separated string); invalid
    entries raise ``ConfigurationError`` at start-up. Leave it empty when the app faces clients
    directly, or when the server already rewrites the peer (uvicorn ``--forwarded-allow-ips``).
    """

    def __init__(
        self,
        app: ASGIApp,
        logger: AuditHelpers | None = None,
        trusted_proxies: TrustedProxies = (),
    ) -> None:
        self.app = app
        self.logger: AuditHelpers = default_logger if logger is None else logger
        self._networks = _parse_networks(trusted_proxies)
        self._trusted_cache: dict[IPAddress, bool] = {}

    def _trusted(self, ip: IPAddress) -> bool:
        known = self._trusted_cache.get(ip)
        if known is None:
            known = any(ip in net for net in self._networks)
            if len(self._trusted_cache) > 10_000:
                self._trusted_cache.clear()
            self._trusted_cache[ip] = known
        return known

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope[SCOPE_KEY] = self._bind(scope)
        await self.app(scope, receive, send)

    def _bind(self, scope: Scope) -> BoundAuditLogger:
        try:
            forwarded: list[str] = []
            user_agent: str | None = None
            for name, value in scope.get("headers") or ():
                if name == b"x-forwarded-for":
                    forwarded.append(value.decode("latin-1"))
                elif name == b"user-agent" and user_agent is None:
                    user_agent = value.decode("latin-1")
            client = scope.get("client")
            peer = client[0] if client else None
            ip = client_ip(peer, forwarded, self._trusted) if self._networks else _plain(peer)
            return BoundAuditLogger(self.logger, ip_address=ip, user_agent=user_agent)
        except Exception as exc:  # noqa: BLE001 - auditing must never fail a request
            log.error("auditledger: request context unavailable (%s)", type(exc).__name__)
            return BoundAuditLogger(self.logger)


def _plain(peer: str | None) -> str | None:
    ip = _parse_ip(peer) if peer else None
    return None if ip is None else str(ip)


def get_audit(request: HTTPConnection) -> BoundAuditLogger:
    """The request's audit helper: a FastAPI dependency, or call it with a Starlette request.

    Every event logged through it carries the request's ``ip_address`` and ``user_agent``. Set
    ``audit.user_id`` / ``audit.workspace_id`` once the user is known to fill those in too (the
    helper belongs to this request alone).
    """
    return _get(request)


async def aget_audit(request: HTTPConnection) -> BoundAuditLogger:
    """``get_audit`` for FastAPI async apps: ``Depends(aget_audit)``.

    FastAPI runs a plain-function dependency in its thread pool; when blocking endpoints have
    filled the pool, an async endpoint depending on ``get_audit`` waits for a free thread
    (measured: 0.8 s instead of 1 ms). A coroutine dependency runs on the event loop.
    """
    return _get(request)


def _get(conn: HTTPConnection) -> BoundAuditLogger:
    bound = conn.scope.get(SCOPE_KEY)
    if isinstance(bound, BoundAuditLogger):
        return bound
    # Without the middleware, the socket peer is the only address that cannot be forged.
    log.warning("auditledger: get_audit() without AuditMiddleware; recording the socket peer")
    client = conn.scope.get("client")
    user_agent = conn.headers.get("user-agent")
    bound = BoundAuditLogger(
        default_logger, ip_address=_plain(client[0] if client else None), user_agent=user_agent
    )
    conn.scope[SCOPE_KEY] = bound
    return bound


@overload
def audit_lifespan(
    logger: AuditLogger | None = None,
    *,
    lifespan: None = None,
    close_timeout: float | None = None,
) -> Callable[[Any], AbstractAsyncContextManager[None]]: ...


@overload
def audit_lifespan(
    logger: AuditLogger | None = None,
    *,
    lifespan: Callable[[Any], AbstractAsyncContextManager[_State]],
    close_timeout: float | None = None,
) -> Callable[[Any], AbstractAsyncContextManager[_State]]: ...


def audit_lifespan(
    logger: AuditLogger | None = None,
    *,
    lifespan: Callable[[Any], AbstractAsyncContextManager[Any]] | None = None,
    close_timeout: float | None = None,
) -> Callable[[Any], AbstractAsyncContextManager[Any]]:
    """A lifespan (``FastAPI(lifespan=...)``, ``Starlette(lifespan=...)``) owning the logger.

    On startup the logger is started: with ``logger=None`` the default logger is created from
    the environment now, so a bad ``AUDITLEDGER_DATABASE_URL`` fails the start-up instead of
    the first request. On shutdown it is flushed and closed (events that cannot reach the
    database in ``close_timeout`` wait in the spool). Wrap your own lifespan with ``lifespan=``.
    """

    @contextlib.asynccontextmanager
    async def _lifespan(app: Any) -> AsyncIterator[Any]:
        from ._api.default import get_logger

        audit = get_logger() if logger is None else logger
        if audit.closed:
            # The previous lifespan of this app closed it (a second TestClient, a restart in
            # the same process): started again, it would only spool. Say so at start-up.
            raise ConfigurationError(
                "this AuditLogger was closed by an earlier shutdown; give audit_lifespan a new "
                "logger for each start (or logger=None to use the default one)"
            )
        try:
            if lifespan is None:
                yield None
            else:
                async with lifespan(app) as state:
                    yield state
        finally:
            timeout = audit.shutdown_timeout if close_timeout is None else close_timeout
            # close() blocks while the writer drains: keep it off the event loop.
            complete = await asyncio.to_thread(audit.close, timeout)
            if logger is None:
                _unset_default(audit)
            if not complete:
                log.warning("auditledger: shutdown left events in the spool for the next start")

    return _lifespan


def _unset_default(closed: AuditLogger) -> None:
    # Only if nobody configured another default meanwhile; the next call then starts afresh.
    previous = _set_default(None)
    if previous is not None and previous is not closed:
        _set_default(previous)
