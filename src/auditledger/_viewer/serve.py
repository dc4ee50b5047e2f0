"""``auditledger serve``: the viewer over every workspace, for an operator, behind a token.

As Jupyter does: a fresh token at each start, printed in a URL. Opening that URL trades the
token for an HttpOnly, SameSite=Strict session cookie and redirects to a URL without it; a
client may instead send ``Authorization: Bearer TOKEN``. Anything else gets 401, except pull
API tokens (``auditledger tokens``), which the viewer checks itself.

Each trade starts its own session (a browser that logs out at ``/logout`` ends only its own),
and a session lasts at most ``SESSION_SECONDS``: a cookie copied off one machine does not
outlive the working day.
"""

from __future__ import annotations

import getpass
import hmac
import secrets
import time
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Receive, Scope, Send

from .access import ViewerAccess
from .gate import ACCESS_KEY
from .headers import SECURITY_HEADERS

SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 1000  # the oldest goes first: a loop opening the URL cannot fill the memory


def operator_name() -> str:
    try:
        return f"operator:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (containers)
        return "operator"


class OperatorGate:
    """Pure ASGI: admits the operator's token or session, and passes pull-API bearers on."""

    def __init__(self, app: ASGIApp, token: str, port: int, actor: str | None = None) -> None:
        self.app = app
        self.token = token
        self.sessions: dict[str, float] = {}  # session id -> when it ends (monotonic)
        # Cookies ignore ports: two servers on one host must not overwrite each other's.
        self.cookie = f"auditledger_session_{port}"
        self.access = ViewerAccess(actor or operator_name(), all_workspaces=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = [v for k, v in query if k == "token"]
        if scope["path"] == scope.get("root_path", "") + "/logout":
            await self._logout(scope, headers, send)
            return
        if given:
            if _same(given[0], self.token):
                await self._trade(scope, query, send)
            else:
                await _plain(send, 401, b"Unauthorized: that token is not this server's\n")
            return
        authorization = headers.get("authorization", "")
        scheme, _, bearer = authorization.partition(" ")
        operator = scheme.lower() == "bearer" and _same(bearer.strip(), self.token)
        if operator or self._live(self._cookie(headers.get("cookie", ""))):
            scope[ACCESS_KEY] = self.access
        elif scheme.lower() != "bearer":
            await _plain(
                send, 401, b"Unauthorized: open the URL that `auditledger serve` printed\n"
            )
            return
        await self.app(scope, receive, send)

    def _cookie(self, header: str) -> str:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(header)
        except Exception:  # noqa: BLE001 - a malformed Cookie header is simply no session
            return ""
        morsel = jar.get(self.cookie)
        return morsel.value if morsel is not None else ""

    def _live(self, session: str) -> bool:
        if not session:
            return False
        now = time.monotonic()
        for known, ends in list(self.sessions.items()):
            # Every id is compared (in constant time) so timing says nothing about which exist.
            if hmac.compare_digest(session.encode(), known.encode()):
                if ends > now:
                    return True
                del self.sessions[known]
        return False

    def _start_session(self) -> str:
        now = time.monotonic()
        for known, ends in list(self.sessions.items()):
            if ends <= now:
                del self.sessions[known]
        while len(self.sessions) >= MAX_SESSIONS:
            del self.sessions[next(iter(self.sessions))]
        session = secrets.token_urlsafe(32)
        self.sessions[session] = now + SESSION_SECONDS
        return session

    async def _logout(self, scope: Scope, headers: dict[str, str], send: Send) -> None:
        session = self._cookie(headers.get("cookie", ""))
        if self._live(session):
            del self.sessions[session]
        expired = f"{self.cookie}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"set-cookie", expired.encode("latin-1")),
                    *SECURITY_HEADERS,
                ],
            }
        )
        await send({"type": "http.response.body", "body": b"Logged out.\n"})

    async def _trade(self, scope: Scope, query: list[tuple[str, str]], send: Send) -> None:
        rest = urlencode([(k, v) for k, v in query if k != "token"])
        location = (scope.get("root_path", "") + scope["path"]) + (f"?{rest}" if rest else "")
        session = self._start_session()
        cookie = (
            f"{self.cookie}={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_SECONDS}"
        )
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", location.encode("latin-1")),
                    (b"set-cookie", cookie.encode("latin-1")),
                    *SECURITY_HEADERS,
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})


def _same(given: str, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


async def _plain(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"www-authenticate", b"Bearer"),
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def make_operator_app(
    database_url: str | None,
    port: int,
    public_keys: list[str],
    token: str | None = None,
) -> tuple[OperatorGate, str]:
    """The gated viewer and its token (fresh unless given, for tests)."""
    from .factory import audit_viewer

    token = token or secrets.token_urlsafe(32)
    viewer = audit_viewer(database_url, authorize=lambda request: None, public_keys=public_keys)
    return OperatorGate(viewer, token, port), token
