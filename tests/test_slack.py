"""auditledger.slack against real Bolt apps (App and AsyncApp), read back from PostgreSQL.

Requests are signed like Slack signs them and go through Bolt's whole middleware chain; the OAuth
callback talks HTTP to a local stand-in for Slack's Web API (oauth.v2.access, auth.test).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pytest
from slack_bolt import App, BoltContext, BoltRequest, BoltResponse
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.oauth.callback_options import FailureArgs, SuccessArgs
from slack_bolt.oauth.oauth_settings import OAuthSettings
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk import WebClient
from slack_sdk.oauth.installation_store import FileInstallationStore
from slack_sdk.oauth.state_store import FileOAuthStateStore
from slack_sdk.web.async_client import AsyncWebClient

from auditledger import (
    AuditHelpers,
    AuditLogger,
    BoundAuditLogger,
    ConfigurationError,
    WorkspaceRef,
)
from auditledger.slack import async_callback_options, callback_options, instrument
from auditledger.testing import CapturingAuditLogger
from examples.slack_backend.fake_slack import (
    FakeSlackApi,
    event_callback,
    signed_headers,
    slash_command,
)
from tests.helpers import by_action, stored
from tests.test_workspaces import workspace_rows

CLIENT_ID = "1111.2222"
WAIT = 10.0  # seconds a test waits for a listener before failing, never a sleep


def assert_no_secrets(url: str, secrets_used: list[str]) -> None:
    """Scan every column of every stored row, as text, for any secret the test used."""
    assert secrets_used
    with psycopg.connect(url) as conn:
        for table in ("audit_logs", "audit_quarantine", "workspaces"):
            for (text,) in conn.execute(f"SELECT t::text FROM {table} t"):
                leaked = [s for s in secrets_used if s in text]
                assert not leaked, f"{table} holds a secret: {text}"


class SignallingStore(FileInstallationStore):
    """Says when Bolt's default clean-up has deleted a workspace's installations."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.deleted = threading.Event()

    def delete_all(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        super().delete_all(enterprise_id=enterprise_id, team_id=team_id)
        self.deleted.set()

    async def async_delete_all(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        self.delete_all(enterprise_id=enterprise_id, team_id=team_id)


class Harness(Protocol):
    app: Any
    store: SignallingStore

    def post(self, body: str, headers: dict[str, str]) -> BoltResponse: ...

    def install_page(self) -> BoltResponse: ...

    def callback(self, query: str, cookie: str | None) -> BoltResponse: ...


class Scenario:
    """One app with the listeners a real backend has; records what they saw."""

    def __init__(self) -> None:
        self.settings: dict[str, str] = {}
        self.uninstalled = threading.Event()
        self.exported = threading.Event()
        self.home_opened = threading.Event()
        self.thread_names: list[str] = []
        self.helpers: list[Any] = []

    def on_command(self, context: BoltContext, text: str) -> str:
        team = context.team_id or ""
        previous = self.settings.get(team)
        self.settings[team] = text
        context["audit"].audit_settings_change(
            setting="digest_channel", previous_value=previous, new_value=text
        )
        return f"Digest channel is now {text}"

    def on_home_opened(self, context: BoltContext) -> None:
        self.thread_names.append(threading.current_thread().name)
        self.helpers.append(context["audit"])
        context["audit"].log_audit_event("app_home_opened", resource="app_home")
        self.home_opened.set()

    def on_export(self, context: BoltContext) -> None:
        self.helpers.append(context["audit"])
        context["audit"].audit_data_export()
        self.exported.set()


def oauth_options(store: SignallingStore, tmp: Path, client_secret: str) -> dict[str, Any]:
    """What the sync and async apps' OAuth settings share."""
    return {
        "client_id": CLIENT_ID,
        "client_secret": client_secret,
        "scopes": ["commands", "chat:write"],
        "user_scopes": ["users:read"],
        "installation_store": store,
        "state_store": FileOAuthStateStore(expiration_seconds=600, base_dir=str(tmp / "states")),
    }


def build_sync(
    api: FakeSlackApi,
    logger: AuditLogger,
    tmp: Path,
    secret: str,
    client_secret: str,
    own_uninstall_listener: bool = True,
    **kw: Any,
) -> tuple[App, Scenario]:
    store = SignallingStore(base_dir=str(tmp / "installations"), client_id=CLIENT_ID)
    app = App(
        signing_secret=secret,
        client=WebClient(base_url=api.url),
        installation_store=store,
        oauth_settings=OAuthSettings(
            **oauth_options(store, tmp, client_secret),
            callback_options=callback_options(logger),
        ),
        **kw,
    )
    instrument(app, logger)
    s = Scenario()

    @app.command("/digest-channel")
    def digest(ack: Callable[..., None], context: BoltContext, command: dict[str, str]) -> None:
        ack(s.on_command(context, command["text"]))

    def ack_export(ack: Callable[..., None]) -> None:
        ack("Export queued")

    def export(context: BoltContext) -> None:
        s.on_export(context)

    app.command("/export-my-data")(ack=ack_export, lazy=[export])

    @app.event("app_home_opened")
    def home(context: BoltContext) -> None:
        s.on_home_opened(context)

    def goodbye() -> None:  # the app's own listener must still run
        s.uninstalled.set()

    if own_uninstall_listener:
        app.event("app_uninstalled")(goodbye)

    return app, s


def build_async(
    api: FakeSlackApi,
    logger: AuditLogger,
    tmp: Path,
    secret: str,
    client_secret: str,
    own_uninstall_listener: bool = True,
    **kw: Any,
) -> tuple[AsyncApp, Scenario]:
    store = SignallingStore(base_dir=str(tmp / "installations"), client_id=CLIENT_ID)
    app = AsyncApp(
        signing_secret=secret,
        client=AsyncWebClient(base_url=api.url),
        installation_store=store,
        oauth_settings=AsyncOAuthSettings(
            **oauth_options(store, tmp, client_secret),
            callback_options=async_callback_options(logger),
        ),
        **kw,
    )
    instrument(app, logger)
    s = Scenario()

    @app.command("/digest-channel")
    async def digest(ack: Any, context: BoltContext, command: dict[str, str]) -> None:
        await ack(s.on_command(context, command["text"]))

    async def ack_export(ack: Any) -> None:
        await ack("Export queued")

    async def export(context: BoltContext) -> None:
        s.on_export(context)

    app.command("/export-my-data")(ack=ack_export, lazy=[export])

    @app.event("app_home_opened")
    async def home(context: BoltContext) -> None:
        s.on_home_opened(context)

    async def goodbye() -> None:
        s.uninstalled.set()

    if own_uninstall_listener:
        app.event("app_uninstalled")(goodbye)

    return app, s


class SyncHarness:
    def __init__(self, app: App, store: SignallingStore) -> None:
        self.app, self.store = app, store

    def post(self, body: str, headers: dict[str, str]) -> BoltResponse:
        return self.app.dispatch(BoltRequest(body=body, headers=headers))  # type: ignore[arg-type]

    def install_page(self) -> BoltResponse:
        assert self.app.oauth_flow is not None
        return self.app.oauth_flow.handle_installation(BoltRequest(body="", query={}, headers={}))

    def callback(self, query: str, cookie: str | None) -> BoltResponse:
        assert self.app.oauth_flow is not None
        headers = {"cookie": cookie} if cookie else {}
        req = BoltRequest(body="", query=query, headers=headers)  # type: ignore[arg-type]
        return self.app.oauth_flow.handle_callback(req)


class AsyncHarness:
    """Runs the AsyncApp on one event loop in a thread, so lazy listeners outlive a request."""

    def __init__(self, app: AsyncApp, store: SignallingStore) -> None:
        self.app, self.store = app, store
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def _run(self, coro: Coroutine[Any, Any, BoltResponse]) -> BoltResponse:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(WAIT)

    def post(self, body: str, headers: dict[str, str]) -> BoltResponse:
        req = AsyncBoltRequest(body=body, headers=headers)  # type: ignore[arg-type]
        return self._run(self.app.async_dispatch(req))

    def install_page(self) -> BoltResponse:
        assert self.app.oauth_flow is not None
        req = AsyncBoltRequest(body="", query={}, headers={})
        return self._run(self.app.oauth_flow.handle_installation(req))

    def callback(self, query: str, cookie: str | None) -> BoltResponse:
        assert self.app.oauth_flow is not None
        headers = {"cookie": cookie} if cookie else {}
        req = AsyncBoltRequest(body="", query=query, headers=headers)  # type: ignore[arg-type]
        return self._run(self.app.oauth_flow.handle_callback(req))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        self.loop.close()


@pytest.fixture
def slack_api() -> Iterator[FakeSlackApi]:
    with FakeSlackApi(CLIENT_ID, "client-secret-" + secrets.token_hex(8)) as api:
        yield api


def install(h: Harness, code: str) -> BoltResponse:
    page = h.install_page()
    cookie = page.headers["set-cookie"][0].split(";", 1)[0]
    state = cookie.split("=", 1)[1]
    return h.callback(f"code={code}&state={state}", cookie)


def post(h: Harness, secret: str, built: tuple[str, str]) -> BoltResponse:
    body, content_type = built
    return h.post(body, signed_headers(secret, body, content_type=content_type))


@pytest.mark.parametrize("flavour", ["App", "AsyncApp"])
def test_a_slack_backend_is_audited_end_to_end(
    flavour: str, slack_api: FakeSlackApi, pg_url: str, tmp_path: Path
) -> None:
    secret = "signing-secret-" + secrets.token_hex(8)
    logger = AuditLogger(pg_url, spool_dir=tmp_path / "spool")
    build = build_sync if flavour == "App" else build_async
    app, s = build(
        slack_api, logger, tmp_path, secret, slack_api.client_secret, process_before_response=True
    )
    h: Harness
    if isinstance(app, App):
        h = SyncHarness(app, app.installation_store)  # type: ignore[arg-type]
    else:
        h = AsyncHarness(app, app.installation_store)  # type: ignore[arg-type]
    try:
        # Install into a workspace and into a whole Enterprise Grid org, then a refused install.
        assert install(h, "acme-code").status == 200
        assert install(h, "initech-org-code").status == 200
        assert h.callback("error=access_denied&state=x", None).status == 200
        assert slack_api.calls.count("oauth.v2.access") == 2
        assert h.store.find_installation(enterprise_id=None, team_id="T0ACME") is not None

        # A slash command, an event, a lazy listener: authorised with the stored bot token.
        resp = post(
            h, secret, slash_command("/digest-channel", "#eng", user_id="U0ALICE", team_id="T0ACME")
        )
        assert (resp.status, resp.body) == (200, "Digest channel is now #eng")
        home = {"type": "app_home_opened", "user": "U0BOB", "channel": "D1", "tab": "home"}
        assert post(h, secret, event_callback(home, team_id="T0ACME")).status == 200
        resp = post(
            h, secret, slash_command("/export-my-data", "", user_id="U0ALICE", team_id="T0ACME")
        )
        assert resp.status == 200
        assert s.exported.wait(WAIT)
        # From inside the org-wide install, Slack names no team: the enterprise is the workspace.
        resp = post(
            h,
            secret,
            event_callback(
                {"type": "app_home_opened", "user": "U0CARL", "channel": "D2", "tab": "home"},
                team_id=None,
                enterprise_id="E0INITECH",
            ),
        )
        assert resp.status == 200
        # A command from inside the org-wide install names the user's team as well: the install
        # is still one tenant, so it lands on the enterprise's row, not a row of its own.
        body, ctype = slash_command(
            "/digest-channel", "#org", user_id="U0CARL", team_id="T0INITECHA",
            enterprise_id="E0INITECH", is_enterprise_install=True,
        )  # fmt: skip
        assert h.post(body, signed_headers(secret, body, content_type=ctype)).status == 200

        # A forged signature is refused before anything is recorded.
        body, ctype = slash_command("/digest-channel", "#evil", user_id="U0EVE", team_id="T0ACME")
        assert h.post(body, signed_headers("wrong-secret", body, content_type=ctype)).status == 401

        # Uninstall: tokens_revoked, then app_uninstalled (which the app also listens to).
        revoked = {
            "type": "tokens_revoked",
            "tokens": {"oauth": ["U0ACMEADMIN"], "bot": ["U0BOTACME"]},
        }
        assert post(h, secret, event_callback(revoked, team_id="T0ACME")).status == 200
        uninstalled = {"type": "app_uninstalled"}
        assert post(h, secret, event_callback(uninstalled, team_id="T0ACME")).status == 200
        assert s.uninstalled.wait(WAIT)
        # Bolt's default clean-up ran, before the response (process_before_response).
        assert h.store.find_installation(enterprise_id=None, team_id="T0ACME") is None
        assert h.store.find_installation(enterprise_id="E0INITECH", team_id=None) is not None
        assert logger.flush(WAIT)
    finally:
        if isinstance(h, AsyncHarness):
            h.close()
        logger.close()

    events = by_action(stored(pg_url))
    ws = workspace_rows(pg_url)
    acme, initech = ws["T0ACME"], ws["E0INITECH"]
    assert (acme["name"], acme["is_active"]) == ("Acme Inc", False)
    assert (initech["enterprise_id"], initech["name"], initech["is_active"]) == (
        "E0INITECH",
        "Initech Group",
        True,
    )

    connected = {e.workspace_id: e for e in events["oauth_connected"]}
    assert set(connected) == {acme["id"], initech["id"]}
    e = connected[acme["id"]]
    assert (e.user_id, e.resource, e.resource_id) == ("U0ACMEADMIN", "oauth", "slack")
    assert e.details["bot_scopes"] == ["commands", "chat:write"]
    assert connected[initech["id"]].details["is_enterprise_install"] is True

    [failed] = events["oauth_failed"]
    assert failed.details == {"reason": "access_denied", "status": 200}

    settings = {e.user_id: e for e in events["settings_changed"]}
    assert set(settings) == {"U0ALICE", "U0CARL"}
    setting = settings["U0ALICE"]
    assert setting.workspace_id == acme["id"]
    assert (setting.resource, setting.resource_id) == ("settings", "digest_channel")
    assert (setting.previous_value, setting.new_value) == (None, "#eng")
    assert settings["U0CARL"].workspace_id == initech["id"]
    assert "T0INITECHA" not in ws  # no second row for the org-wide install

    homes = {e.user_id: e.workspace_id for e in events["app_home_opened"]}
    assert homes == {"U0BOB": acme["id"], "U0CARL": initech["id"]}
    [export] = events["data_export_requested"]
    assert (export.user_id, export.workspace_id) == ("U0ALICE", acme["id"])

    disconnected = {e.details["slack_event"]: e for e in events["oauth_disconnected"]}
    assert set(disconnected) == {"tokens_revoked", "app_uninstalled"}
    assert disconnected["tokens_revoked"].details["revoked_user_ids"] == ["U0ACMEADMIN"]
    assert all(d.workspace_id == acme["id"] for d in disconnected.values())
    assert "U0EVE" not in {e.user_id for group in events.values() for e in group}

    assert_no_secrets(pg_url, [*slack_api.issued_tokens, secret, slack_api.client_secret])


def harness(
    flavour: str, api: FakeSlackApi, logger: AuditLogger, tmp: Path, secret: str, **kw: Any
) -> tuple[Harness, Scenario]:
    if flavour == "App":
        app, s = build_sync(api, logger, tmp, secret, api.client_secret, **kw)
        return SyncHarness(app, app.installation_store), s  # type: ignore[arg-type]
    aapp, s = build_async(api, logger, tmp, secret, api.client_secret, **kw)
    return AsyncHarness(aapp, aapp.installation_store), s  # type: ignore[arg-type]


@pytest.mark.parametrize("flavour", ["App", "AsyncApp"])
def test_background_listeners_lazy_listeners_and_cleanup(
    flavour: str, slack_api: FakeSlackApi, tmp_path: Path
) -> None:
    """Listeners after the response (thread pool / tasks): the helper rides in the context."""
    secret = "s-" + secrets.token_hex(8)
    logger = CapturingAuditLogger()
    with logger:
        h, s = harness(
            flavour,
            slack_api,
            logger,
            tmp_path,
            secret,
            own_uninstall_listener=False,
            process_before_response=False,
        )
        try:
            assert install(h, "globex-code").status == 200
            home = {"type": "app_home_opened", "user": "U0GINA", "channel": "D1", "tab": "home"}
            assert post(h, secret, event_callback(home, team_id="T0GLOBEX")).status == 200
            assert s.home_opened.wait(WAIT)
            assert (
                post(
                    h,
                    secret,
                    slash_command("/export-my-data", "", user_id="U0GINA", team_id="T0GLOBEX"),
                ).status
                == 200
            )
            assert s.exported.wait(WAIT)
            # No listener of the app's own: still acknowledged (a 404 would make Slack retry).
            resp = post(h, secret, event_callback({"type": "app_uninstalled"}, team_id="T0GLOBEX"))
            assert resp.status == 200
            assert h.store.deleted.wait(WAIT)
        finally:
            if isinstance(h, AsyncHarness):
                h.close()
        events = logger.events
    if flavour == "App":
        assert s.thread_names[0] != threading.main_thread().name  # ran in Bolt's thread pool
    lazy_helper = s.helpers[-1]
    assert isinstance(lazy_helper, BoundAuditLogger)
    assert (lazy_helper.user_id, lazy_helper.workspace_id) == ("U0GINA", WorkspaceRef("T0GLOBEX"))
    got = {e.action: e for e in events}
    assert set(got) == {
        "oauth_connected",
        "app_home_opened",
        "data_export_requested",
        "oauth_disconnected",
    }
    ws = got["oauth_connected"].workspace_id
    assert all(e.workspace_id == ws for e in events)
    assert got["data_export_requested"].user_id == got["app_home_opened"].user_id == "U0GINA"
    assert [e.action for e in events].count("oauth_disconnected") == 1


def test_custom_handlers_run_after_the_audit(slack_api: FakeSlackApi, tmp_path: Path) -> None:
    seen: list[str] = []

    def success(args: SuccessArgs) -> BoltResponse:
        seen.append(f"success {args.installation.team_id}")
        return BoltResponse(status=302, body="", headers={"location": "/welcome"})

    def failure(args: FailureArgs) -> BoltResponse:
        seen.append(f"failure {args.reason}")
        return BoltResponse(status=400, body="try again")

    logger = CapturingAuditLogger()
    with logger:
        store = FileInstallationStore(base_dir=str(tmp_path / "i"), client_id=CLIENT_ID)
        app = App(
            signing_secret="x",
            client=WebClient(base_url=slack_api.url),
            oauth_settings=OAuthSettings(
                client_id=CLIENT_ID,
                client_secret=slack_api.client_secret,
                scopes=["commands"],
                installation_store=store,
                state_validation_enabled=False,
                callback_options=callback_options(logger, success=success, failure=failure),
            ),
        )
        instrument(app, logger)
        h = SyncHarness(app, store)  # type: ignore[arg-type]
        assert h.callback("code=acme-code", None).status == 302
        assert h.callback("code=not-a-code", None).status == 400
        with pytest.raises(ConfigurationError, match="already instrumented"):
            instrument(app, logger)
        events = logger.events
    assert seen == ["success T0ACME", "failure invalid_code"]
    assert [e.action for e in events] == ["oauth_connected", "oauth_failed"]
    assert events[1].details == {"reason": "invalid_code", "status": 401}


def test_an_app_without_oauth_callbacks_is_flagged(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    store = FileInstallationStore(base_dir=str(tmp_path), client_id=CLIENT_ID)
    settings = OAuthSettings(
        client_id=CLIENT_ID, client_secret="y", scopes=["commands"], installation_store=store
    )
    app = App(signing_secret="x", oauth_settings=settings)
    with caplog.at_level(logging.WARNING, logger="auditledger"):
        instrument(app)
    assert "installs of this Bolt app are not audited" in caplog.text


class Exploding(AuditHelpers):
    """A logger that fails: auditing must still never fail the Slack request."""

    def log_audit_event(self, action: Any, **fields: Any) -> None:
        raise RuntimeError("boom")


def test_a_failing_logger_never_fails_the_request(caplog: pytest.LogCaptureFixture) -> None:
    secret = "s-" + secrets.token_hex(8)

    def authorize(enterprise_id: str | None, team_id: str | None) -> AuthorizeResult:
        raise AssertionError("uninstall events need no authorization")

    app = App(signing_secret=secret, authorize=authorize)
    instrument(app, Exploding())
    body, ctype = event_callback({"type": "app_uninstalled"}, team_id="T0ACME")
    headers: dict[str, Any] = signed_headers(secret, body, content_type=ctype)
    with caplog.at_level(logging.ERROR, logger="auditledger"):
        resp = app.dispatch(BoltRequest(body=body, headers=headers))
    assert resp.status == 200
    assert "Slack request not audited (RuntimeError)" in caplog.text
