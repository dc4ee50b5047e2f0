"""What a query asks for, checked and normalised once, so a cursor can be bound to it."""

from __future__ import annotations

import hashlib
import ipaddress
import re
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import orjson

from .._chain.canonical import micros

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_LIMIT = 1000
# "7d" and "7d ago" are one span: the help of every time option shows both spellings.
_RELATIVE = re.compile(r"^\s*(\d+)\s*(s|m|min|h|d|w)(?:\s+ago)?\s*$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Filters:
    """Every filter of a query. ``workspace`` is resolved to its id before this is built.

    ``since_span`` / ``until_span``: set when that time was given as a span back from now
    (``--since 2h``). The span is part of what a cursor is bound to, and the moment it
    resolved to on the first page is carried by the cursor: every later page of that query
    uses the same moment, and a cursor made with any other time (or none) is refused."""

    workspace: uuid.UUID | None = None
    user_id: str | None = None
    action: str | None = None
    action_prefix: str | None = None
    resource: str | None = None
    resource_id: str | None = None
    ip: IpNetwork | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None
    oldest_first: bool = False
    since_span: timedelta | None = None
    until_span: timedelta | None = None

    @property
    def relative(self) -> bool:
        return self.since_span is not None or self.until_span is not None

    def pinned(self, since_us: int | None, until_us: int | None) -> Filters:
        """These filters with their relative times at the moments a cursor carries."""
        since, until = self.since, self.until
        if self.since_span is not None:
            since = None if since_us is None else _EPOCH + timedelta(microseconds=since_us)
        if self.until_span is not None:
            until = None if until_us is None else _EPOCH + timedelta(microseconds=until_us)
        return replace(self, since=since, until=until)

    def fingerprint(self) -> str:
        """A digest of the filters and the direction: what a cursor is bound to."""
        data = {
            "workspace": None if self.workspace is None else str(self.workspace),
            "user_id": self.user_id,
            "action": self.action,
            "action_prefix": self.action_prefix,
            "resource": self.resource,
            "resource_id": self.resource_id,
            "ip": None if self.ip is None else str(self.ip),
            "since": None if self.since is None else micros(self.since),
            "until": None if self.until is None else micros(self.until),
            "text": self.text,
            "oldest_first": self.oldest_first,
            "since_span": _span_us(self.since_span),
            "until_span": _span_us(self.until_span),
        }
        return hashlib.sha256(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]

    def described(self) -> dict[str, str]:
        """The filters that are set, as text (for the record of an export or a view)."""
        out: dict[str, str] = {}
        for name in ("user_id", "action", "action_prefix", "resource", "resource_id", "text"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.ip is not None:
            out["ip"] = str(self.ip)
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.isoformat()
        return out


def _span_us(span: timedelta | None) -> int | None:
    return None if span is None else span // timedelta(microseconds=1)


def parse_ip(value: str | IpNetwork | ipaddress.IPv4Address | ipaddress.IPv6Address) -> IpNetwork:
    """An address or a CIDR network; raises ValueError naming the value otherwise."""
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return value
    try:
        return ipaddress.ip_network(str(value).strip(), strict=False)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an IP address or a CIDR network") from exc


def aware(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC, as the issue and the CLI promise."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def parse_time(value: str, *, now: datetime | None = None) -> datetime:
    """``2026-11-01``, ``2026-11-01T09:30``, ``...Z``/``+02:00``, or a span back from now:
    ``90s``, ``15m``, ``2h``, ``7d``, ``1w``, each also with `` ago`` (``7d ago``).
    Raises ValueError naming the value otherwise."""
    when = parse_when(value)
    if isinstance(when, timedelta):
        try:
            return (now or datetime.now(UTC)) - when
        except OverflowError as exc:
            raise ValueError(f"{value!r} reaches back before the year 1") from exc
    return when


def parse_when(value: str) -> datetime | timedelta:
    """A moment, or (``2h``, ``7d``...) a span back from now, left for the reader to resolve
    once and bind to the query's cursors. Raises ValueError naming the value otherwise."""
    match = _RELATIVE.match(value)
    if match:
        try:
            return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
        except (OverflowError, ValueError) as exc:
            # Beyond timedelta's range (about 2.7 million years) or int()'s digit limit: one
            # clear refusal, not an OverflowError out of callers that expect ValueError.
            raise ValueError(f"{value!r} reaches back before the year 1") from exc
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        return aware(datetime.fromisoformat(text))
    except ValueError as exc:
        raise ValueError(
            f"{value!r} is not a time: give an ISO 8601 date or time (2026-11-01,"
            " 2026-11-01T09:30Z) or a span back from now (30m, 2h, 7d, 7d ago)"
        ) from exc


def check_window(since: datetime | None, until: datetime | None) -> None:
    """A window that ends before it starts is a typo, not a question with no answer."""
    if since is not None and until is not None and since > until:
        raise ValueError(
            f"since ({since.isoformat()}) is after until ({until.isoformat()}): nothing could match"
        )


def check_limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}, not {limit!r}")
    return limit
