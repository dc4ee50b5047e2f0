"""The NATS URL as users give it; importable without nats-py."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from urllib.parse import urlsplit

from .._errors import ConfigurationError
from .._sinks.base import Sink
from .auth import publisher_key
from .urls import server_urls

ENV_NATS_URL = "AUDITLEDGER_NATS_URL"


def resolve_nats_url(nats_url: str | None, database_url: str | None) -> str | None:
    """The NATS URL to publish to, or None to write to the database.

    An argument wins over the environment; ``AUDITLEDGER_NATS_URL`` applies only when no
    ``database_url`` argument was given.
    """
    if nats_url is not None and database_url is not None:
        raise ConfigurationError("give database_url or nats_url, not both")
    if nats_url is not None:
        return nats_url
    if database_url is not None:
        return None
    return os.environ.get(ENV_NATS_URL) or None


def check_nats_url(url: str) -> str:
    """A fingerprint of the server, or of a cluster's servers (for the default spool folder),
    or ConfigurationError. ``url`` may list a cluster's servers separated by commas
    (``nats://a:4222,nats://b:4222``): the client connects to any and fails over to the
    others. Messages never echo the URL: it may hold a token."""
    places = []
    for one in server_urls(url):
        try:
            parts = urlsplit(one)
            port = parts.port or 4222
        except ValueError as exc:
            raise ConfigurationError("the NATS URL could not be parsed") from exc
        if parts.scheme not in ("nats", "tls") or not parts.hostname:
            raise ConfigurationError(
                "the NATS URL must look like nats://host:4222 (a cluster: several, "
                "separated by commas)"
            )
        places.append(f"{parts.hostname}:{port}")
    # The same servers listed in another order are the same cluster, and the same spool.
    return hashlib.sha256(("nats:" + ",".join(sorted(places))).encode()).hexdigest()[:16]


def publisher_factory(
    url: str, write_timeout: float, signing_key: object, nats_key: str | None = None
) -> tuple[Callable[[], Sink], str]:
    """For ``AuditLogger(nats_url=...)``: a function making the publishing sink, and the
    server's fingerprint. ``nats_key`` (default ``AUDITLEDGER_NATS_KEY``) signs every
    message. Raises MissingExtraError at once without nats-py."""
    fingerprint = check_nats_url(url)
    if signing_key is not None:
        raise ConfigurationError("signing_key belongs on the ingesters when nats_url is set")
    key = publisher_key(nats_key)
    from .publisher import NatsSink

    def factory() -> Sink:
        return NatsSink(url, timeout=write_timeout, key=key)

    return factory, fingerprint
