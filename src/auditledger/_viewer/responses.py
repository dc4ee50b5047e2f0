"""Small answers shared by the routes: errors, parameters, who is looking."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .filters import FilterError

_BOUND_AUDIT = "auditledger.audit"  # the request's helper, when the host has AuditMiddleware


def who(request: Request) -> tuple[str | None, str | None]:
    """The looker's address and user agent: the host's AuditMiddleware knows them best."""
    bound = request.scope.get(_BOUND_AUDIT)
    if bound is not None:
        return getattr(bound, "ip_address", None), getattr(bound, "user_agent", None)
    client = request.client
    return (client.host if client else None), request.headers.get("user-agent")


def limit(raw: str | None, default: int, most: int) -> int:
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise FilterError(f"limit: a number from 1 to {most}") from exc
    if not 1 <= value <= most:
        raise FilterError(f"limit: a number from 1 to {most}")
    return value


def flag(raw: str | None) -> bool:
    if raw is None or raw == "":
        return False
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise FilterError("oldest_first: true or false")


def plain_error(message: str, status: int) -> Response:
    return Response(message + "\n", status_code=status, media_type="text/plain")


def not_found(*, json: bool = False) -> Response:
    if json:
        return JSONResponse({"error": "not found"}, status_code=404)
    return Response("Not found\n", status_code=404, media_type="text/plain")


def refused(status: int) -> Response:
    if status == 401:
        return Response(
            "Unauthorized\n",
            status_code=401,
            media_type="text/plain",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return Response("Forbidden\n", status_code=403, media_type="text/plain")
