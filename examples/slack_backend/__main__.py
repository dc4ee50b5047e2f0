"""``python -m examples.slack_backend``: the Bolt backend on http://127.0.0.1:3000.

With ``SLACK_CLIENT_ID`` and ``SLACK_CLIENT_SECRET`` (and ``SLACK_SIGNING_SECRET``) set, it talks
to Slack. Without them it needs no Slack account: a local stand-in answers the Web API calls of
the install flow (install codes ``acme-code``, ``globex-code``, ``initech-org-code``), and
requests are signed with ``SLACK_SIGNING_SECRET`` (default ``demo-signing-secret``).

Other settings: ``AUDITLEDGER_DATABASE_URL`` (default ``sqlite:///demo-data/audit.db``),
``SLACK_BACKEND_HOST`` / ``SLACK_BACKEND_PORT`` (127.0.0.1 / 3000),
``SLACK_BACKEND_TRUSTED_PROXIES`` (default ``127.0.0.1,::1``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import uvicorn

from auditledger import AuditLogger
from examples._serve import database_url, prepare_database
from examples.slack_backend.app import SlackConfig, create_app
from examples.slack_backend.fake_slack import FakeSlackApi

DEMO_SIGNING_SECRET = "demo-signing-secret"  # noqa: S105 - the no-account demo's, not a secret


def main() -> None:
    url = database_url()
    prepare_database(url)
    signing_secret = os.environ.get("SLACK_SIGNING_SECRET") or DEMO_SIGNING_SECRET
    client_id = os.environ.get("SLACK_CLIENT_ID")
    client_secret = os.environ.get("SLACK_CLIENT_SECRET")
    fake: FakeSlackApi | None = None
    if client_id and client_secret:
        api_url = os.environ.get("SLACK_API_URL") or "https://slack.com/api/"
    else:
        client_id, client_secret = "demo-client-id", os.urandom(16).hex()
        fake = FakeSlackApi(client_id, client_secret).start()
        api_url = fake.url
        print(
            f"No Slack credentials: Slack's Web API is a local stand-in at {api_url}",
            file=sys.stderr,
        )
    config = SlackConfig(
        signing_secret=signing_secret,
        client_id=client_id,
        client_secret=client_secret,
        api_url=api_url,
        data_dir=Path(os.environ.get("SLACK_BACKEND_DATA_DIR", "demo-data/slack")),
    )
    app = create_app(
        config,
        AuditLogger(url),
        trusted_proxies=os.environ.get("SLACK_BACKEND_TRUSTED_PROXIES", "127.0.0.1,::1"),
    )
    try:
        uvicorn.run(
            app,
            host=os.environ.get("SLACK_BACKEND_HOST", "127.0.0.1"),
            port=int(os.environ.get("SLACK_BACKEND_PORT", "3000")),
            proxy_headers=False,  # auditledger.web reads X-Forwarded-For (trusted proxies)
            access_log=False,
        )
    finally:
        if fake is not None:
            fake.close()


if __name__ == "__main__":
    main()
