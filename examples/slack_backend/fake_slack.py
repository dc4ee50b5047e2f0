"""A stand-in for Slack, so the backend runs (and is tested) without a Slack account.

- ``FakeSlackApi``: a tiny HTTP server on 127.0.0.1 answering the two Web API methods the OAuth
  callback calls (``oauth.v2.access``, then ``auth.test``) and the ``auth.test`` calls Bolt's
  authorization makes on every request. Point the app's ``WebClient(base_url=...)`` at ``url``.
- ``signed_headers`` and the body builders: requests as Slack sends them, signed with the app's
  signing secret (``slack_sdk.signature.SignatureVerifier``), for tests and ``make demo``.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from slack_sdk.signature import SignatureVerifier

APP_ID = "A0DEMOAPP"


@dataclass(frozen=True)
class FakeWorkspace:
    """What an install into this workspace (or org) returns; ``code`` starts the OAuth callback."""

    code: str
    installer_user_id: str
    team_id: str | None
    team_name: str | None
    enterprise_id: str | None = None
    enterprise_name: str | None = None

    @property
    def is_enterprise_install(self) -> bool:
        return self.team_id is None


DEMO_WORKSPACES = (
    FakeWorkspace("acme-code", "U0ACMEADMIN", "T0ACME", "Acme Inc"),
    FakeWorkspace("globex-code", "U0GLOBEXOPS", "T0GLOBEX", "Globex"),
    # An org-wide (Enterprise Grid) install: Slack sends no team, only the enterprise.
    FakeWorkspace("initech-org-code", "U0INITECH", None, None, "E0INITECH", "Initech Group"),
)


class FakeSlackApi:
    """Serves ``oauth.v2.access`` and ``auth.test`` like slack.com/api, for known codes."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        workspaces: tuple[FakeWorkspace, ...] = DEMO_WORKSPACES,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.workspaces = {w.code: w for w in workspaces}
        self.issued_tokens: list[str] = []  # every token handed out, for leak checks
        self.calls: list[str] = []
        self._identities: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL for ``WebClient(base_url=...)``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/"

    def start(self) -> FakeSlackApi:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-slack-api", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FakeSlackApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- the Web API methods ----------------------------------------------------------

    def call(self, method: str, params: dict[str, str], headers: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            self.calls.append(method)
        if method == "oauth.v2.access":
            return self._oauth_v2_access(params, headers)
        if method == "auth.test":
            return self._auth_test(params, headers)
        return {"ok": False, "error": "unknown_method"}

    def _oauth_v2_access(self, params: dict[str, str], headers: dict[str, str]) -> dict[str, Any]:
        client_id, client_secret = params.get("client_id"), params.get("client_secret")
        auth = headers.get("authorization", "")
        if auth.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(auth[6:]).decode().partition(":")
        if (client_id, client_secret) != (self.client_id, self.client_secret):
            return {"ok": False, "error": "invalid_client_id"}
        ws = self.workspaces.get(params.get("code", ""))
        if ws is None:
            return {"ok": False, "error": "invalid_code"}
        key = ws.team_id or ws.enterprise_id or "X"
        bot_token = f"xoxb-{key}-{secrets.token_hex(12)}"
        user_token = f"xoxp-{key}-{secrets.token_hex(12)}"
        bot_user_id, bot_id = f"U0BOT{key[-4:]}", f"B0BOT{key[-4:]}"
        enterprise = {"id": ws.enterprise_id, "name": ws.enterprise_name}
        identity = {
            "url": "https://example.slack.com/",
            "team": ws.team_name,
            "team_id": ws.team_id,
            "enterprise_id": ws.enterprise_id,
            "is_enterprise_install": ws.is_enterprise_install,
        }
        with self._lock:
            self.issued_tokens += [bot_token, user_token]
            self._identities[bot_token] = {
                **identity,
                "user": "demo-bot",
                "user_id": bot_user_id,
                "bot_id": bot_id,
            }
            self._identities[user_token] = {
                **identity,
                "user": "installer",
                "user_id": ws.installer_user_id,
            }
        return {
            "ok": True,
            "app_id": APP_ID,
            "authed_user": {
                "id": ws.installer_user_id,
                "scope": "users:read",
                "access_token": user_token,
                "token_type": "user",
            },
            "scope": "commands,chat:write",
            "token_type": "bot",
            "access_token": bot_token,
            "bot_user_id": bot_user_id,
            "team": {"id": ws.team_id, "name": ws.team_name} if ws.team_id else None,
            "enterprise": enterprise if ws.enterprise_id else None,
            "is_enterprise_install": ws.is_enterprise_install,
        }

    def _auth_test(self, params: dict[str, str], headers: dict[str, str]) -> dict[str, Any]:
        auth = headers.get("authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else params.get("token", "")
        with self._lock:
            identity = self._identities.get(token)
        if identity is None:
            return {"ok": False, "error": "invalid_auth"}
        return {"ok": True, **identity}


def _handler(api: FakeSlackApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length).decode()
            if (self.headers.get("content-type") or "").startswith("application/json"):
                params = {k: str(v) for k, v in (json.loads(raw or "{}")).items()}
            else:
                params = {k: v[0] for k, v in parse_qs(raw).items()}
            url = urlsplit(self.path)
            params.update({k: v[0] for k, v in parse_qs(url.query).items()})
            method = url.path.rsplit("/", 1)[-1]
            headers = {k.lower(): v for k, v in self.headers.items()}
            body = json.dumps(api.call(method, params, headers)).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json; charset=utf-8")
            self.send_header("x-oauth-scopes", "commands,chat:write")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: the requests carry tokens

    return Handler


# ---- requests as Slack sends them -------------------------------------------------------


def signed_headers(
    signing_secret: str, body: str, *, content_type: str, timestamp: int | None = None
) -> dict[str, str]:
    """The headers Slack sends with ``body``, signed as Slack signs it."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(signing_secret).generate_signature(timestamp=ts, body=body) or ""
    return {
        "content-type": content_type,
        "x-slack-request-timestamp": ts,
        "x-slack-signature": signature,
    }


def slash_command(
    command: str,
    text: str,
    *,
    user_id: str,
    team_id: str,
    enterprise_id: str | None = None,
    is_enterprise_install: bool = False,
) -> tuple[str, str]:
    """A slash command's form-encoded body and content type."""
    fields: dict[str, str] = {
        "token": "legacy-verification-value",
        "team_id": team_id,
        "team_domain": "example",
        "channel_id": "C0GENERAL",
        "channel_name": "general",
        "user_id": user_id,
        "user_name": user_id.lower(),
        "command": command,
        "text": text,
        "api_app_id": APP_ID,
        "is_enterprise_install": "true" if is_enterprise_install else "false",
        "response_url": "https://hooks.slack.com/commands/T0/1/x",
        "trigger_id": "1.2.3",
    }
    if enterprise_id is not None:
        fields["enterprise_id"] = enterprise_id
    return urlencode(fields), "application/x-www-form-urlencoded"


def event_callback(
    event: dict[str, Any],
    *,
    team_id: str | None,
    enterprise_id: str | None = None,
    event_id: str | None = None,
) -> tuple[str, str]:
    """An Events API delivery (JSON) of ``event`` to the app installed in this team or org."""
    body = {
        "token": "legacy-verification-value",
        "team_id": team_id or enterprise_id,
        "enterprise_id": enterprise_id,
        "api_app_id": APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"Ev{secrets.token_hex(5).upper()}",
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": enterprise_id,
                "team_id": team_id,
                "user_id": "U0BOT",
                "is_bot": True,
                "is_enterprise_install": team_id is None,
            }
        ],
        "is_ext_shared_channel": False,
    }
    return json.dumps(body), "application/json"
