"""The Slack backend: a Bolt ``AsyncApp`` served by FastAPI, audited through auditledger.

- ``/slack/events``: slash commands and events, signed by Slack. ``instrument`` gives every
  listener ``context["audit"]`` bound to the Slack user and workspace, and records
  ``tokens_revoked`` / ``app_uninstalled`` as ``oauth_disconnected``.
- ``/slack/install`` and ``/slack/oauth_redirect``: the OAuth install flow. The audited callback
  options record ``oauth_connected`` / ``oauth_failed``; the web middleware in front supplies
  the installer's address and browser, which Bolt's own request does not carry.

Commands: ``/digest-channel #channel`` (a workspace setting), ``/export-my-data`` (a GDPR
request, acknowledged at once and recorded by a lazy listener after the response).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.oauth.installation_store import FileInstallationStore
from slack_sdk.oauth.state_store import FileOAuthStateStore
from slack_sdk.web.async_client import AsyncWebClient

from auditledger import AuditLogger
from auditledger.slack import async_callback_options, instrument
from auditledger.web import AuditMiddleware, TrustedProxies, audit_lifespan, get_audit


@dataclass
class SlackConfig:
    signing_secret: str
    client_id: str
    client_secret: str
    api_url: str = "https://slack.com/api/"
    data_dir: Path = Path("demo-data/slack")
    scopes: list[str] = field(default_factory=lambda: ["commands", "chat:write"])


def create_bolt_app(config: SlackConfig, logger: AuditLogger | None) -> AsyncApp:
    store = FileInstallationStore(
        base_dir=str(config.data_dir / "installations"), client_id=config.client_id
    )
    bolt = AsyncApp(
        signing_secret=config.signing_secret,
        client=AsyncWebClient(base_url=config.api_url),
        installation_store=store,
        oauth_settings=AsyncOAuthSettings(
            client_id=config.client_id,
            client_secret=config.client_secret,
            scopes=config.scopes,
            installation_store=store,
            state_store=FileOAuthStateStore(
                expiration_seconds=600, base_dir=str(config.data_dir / "states")
            ),
            callback_options=async_callback_options(logger),
        ),
    )
    instrument(bolt, logger)
    digest_channels: dict[str, str] = {}  # per workspace; a real app keeps this in its DB

    @bolt.command("/digest-channel")
    async def set_digest_channel(ack: Any, command: dict[str, Any], context: Any) -> None:
        channel = (command.get("text") or "").strip()
        if not channel.startswith("#"):
            await ack("Usage: /digest-channel #channel")
            return
        key = context.team_id or context.enterprise_id
        previous = digest_channels.get(key)
        digest_channels[key] = channel
        context["audit"].audit_settings_change(
            setting="digest_channel", previous_value=previous, new_value=channel
        )
        await ack(f"Daily digests now go to {channel}.")

    async def ack_export(ack: Any) -> None:
        await ack("Your data export is on its way; you will get a DM when it is ready.")

    async def start_export(context: Any) -> None:
        # A lazy listener runs after the response, on a deep copy of the context: the bound
        # helper survives the copy and still knows who asked.
        context["audit"].audit_data_export()

    bolt.command("/export-my-data")(ack=ack_export, lazy=[start_export])

    @bolt.event("app_uninstalled")
    async def forget_workspace(context: Any) -> None:
        # The app's own clean-up still runs: auditledger records the uninstall in middleware.
        digest_channels.pop(context.team_id or context.enterprise_id, None)

    return bolt


def create_app(
    config: SlackConfig,
    logger: AuditLogger | None = None,
    *,
    trusted_proxies: TrustedProxies = ("127.0.0.1", "::1"),
) -> FastAPI:
    bolt = create_bolt_app(config, logger)
    handler = AsyncSlackRequestHandler(bolt)
    app = FastAPI(title="Slack backend", lifespan=audit_lifespan(logger))
    app.add_middleware(AuditMiddleware, logger=logger, trusted_proxies=trusted_proxies)

    @app.post("/slack/events")
    async def events(request: Request) -> Response:
        return await handler.handle(request)

    @app.get("/slack/install")
    async def install(request: Request) -> Response:
        return await handler.handle(request)

    @app.get("/slack/oauth_redirect")
    async def oauth_redirect(request: Request) -> Response:
        # Bolt's OAuth routes bypass its middleware; handing over the web helper records the
        # installer's address (behind trusted proxies) and browser with the install.
        return await handler.handle(
            request, addition_context_properties={"audit": get_audit(request)}
        )

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
