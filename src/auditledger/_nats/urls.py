"""NATS URLs as users give them: one server, or a cluster's separated by commas."""

from __future__ import annotations


def server_urls(url: str) -> list[str]:
    """The servers a NATS URL lists, for the client to connect to any and fail over."""
    return [part.strip() for part in url.split(",") if part.strip()] or [url]
