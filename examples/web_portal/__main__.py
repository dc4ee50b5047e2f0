"""``python -m examples.web_portal``: the portal on http://127.0.0.1:8000, audited to SQLite.

Environment: ``AUDITLEDGER_DATABASE_URL`` (default ``sqlite:///demo-data/audit.db``),
``PORTAL_HOST`` / ``PORTAL_PORT`` (127.0.0.1 / 8000), ``PORTAL_TRUSTED_PROXIES`` (the proxies
whose X-Forwarded-For is believed; default ``127.0.0.1,::1``). Workspace admins see their
workspace's audit trail at /audit/.
"""

from __future__ import annotations

import os

import uvicorn

from auditledger import AuditLogger
from examples._serve import database_url, prepare_database
from examples.web_portal.app import create_app


def main() -> None:
    url = database_url()
    prepare_database(url)
    app = create_app(
        AuditLogger(url),
        trusted_proxies=os.environ.get("PORTAL_TRUSTED_PROXIES", "127.0.0.1,::1"),
        viewer_database_url=url,
    )
    uvicorn.run(
        app,
        host=os.environ.get("PORTAL_HOST", "127.0.0.1"),
        port=int(os.environ.get("PORTAL_PORT", "8000")),
        # The middleware reads X-Forwarded-For itself, with its own list of trusted proxies;
        # uvicorn rewriting the peer first would make that list meaningless.
        proxy_headers=False,
        access_log=False,
    )


if __name__ == "__main__":
    main()
