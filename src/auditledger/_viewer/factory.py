"""``audit_viewer()``: the viewer built from a reader or a URL, an authorize function, keys."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .._errors import ConfigurationError
from .access import Authorize
from .app import AuditViewer


def audit_viewer(
    reader_or_url: Any = None,
    *,
    authorize: Authorize,
    public_keys: Sequence[str | os.PathLike[str]] = (),
    logger: Any = None,
    badge_interval: float = 60.0,
    chain_badge: bool = True,
) -> AuditViewer:
    """The viewer as an ASGI app: ``app.mount("/audit", audit_viewer(url, authorize=...))``.

    ``reader_or_url``: an ``AuditReader``, or a database URL (default: the environment's).
    ``authorize(request)`` (sync or async) returns a ``ViewerAccess`` naming the actor and the
    workspaces they may see, or None to refuse (403). ``public_keys``: the Ed25519 keys the
    chain badge checks checkpoint signatures with (without them it checks the chains only and
    says so). ``logger``: the ``AuditLogger`` that records each view and export (default: one
    of the viewer's own on the same database). ``badge_interval``: seconds between two verifies
    of a workspace shown; ``chain_badge=False`` leaves the badge out (no verify at all). Call
    ``close()`` when the host shuts down.
    """
    from .._api.logger import AuditLogger
    from .._api.reader import AuditReader

    if not callable(authorize):
        raise ConfigurationError("audit_viewer() needs authorize=, a function of the request")
    owns: list[Any] = []
    if isinstance(reader_or_url, AuditReader):
        reader = reader_or_url
    elif reader_or_url is None or isinstance(reader_or_url, str):
        reader = AuditReader(reader_or_url)
        owns.append(reader)
    else:
        raise ConfigurationError("audit_viewer() takes an AuditReader or a database URL")
    # The badge's verify opens its own connections (and on PostgreSQL, processes) by URL.
    database_url = reader.engine.url.render_as_string(hide_password=False)
    if logger is None:
        logger = AuditLogger(database_url)
        owns.insert(0, logger)
    keys = [os.fspath(k) for k in public_keys]
    return AuditViewer(
        reader,
        reader.engine,
        database_url,
        authorize,
        public_keys=keys,
        audit=logger,
        owns=owns,
        badge_interval=badge_interval,
        chain_badge=chain_badge,
    )
