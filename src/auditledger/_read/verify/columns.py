"""Comparing an event's columns with what was hashed: the canonical form rebuilt from the
columns (with ``_chain.canonical.canonical_form``, as the writer built it), and, when it
differs, which columns changed or were erased."""

from __future__ import annotations

import hashlib
import json
import uuid
from decimal import Decimal
from typing import Any

import orjson

from ..._chain.canonical import (
    C_WORKSPACE,
    CANONICAL_VERSION,
    JSON_PARTS,
    NO_WORKSPACE,
    PERSONAL,
    PERSONAL_TAGS,
    canonical_form,
    chain_of,
    normalise_json,
)
from ..._db.rows import (
    ROW_ACTION,
    ROW_CANONICAL,
    ROW_CHAIN,
    ROW_CREATED,
    ROW_DETAILS,
    ROW_ID,
    ROW_IP,
    ROW_NEW,
    ROW_PREVIOUS,
    ROW_RESOURCE,
    ROW_RESOURCE_ID,
    ROW_SALT,
    ROW_SANITISED,
    ROW_SEQ,
    ROW_UA,
    ROW_USER,
    ROW_WORKSPACE,
)
from .report import MODIFIED, VerifyProblem, VerifyReport
from .source import PG_EPOCH_US, VerifyRow
from .v2 import differences, fast_match

_dumps = orjson.dumps
_Fragment = orjson.Fragment
_JSON_ROW = {
    "details": ROW_DETAILS,
    "previous_value": ROW_PREVIOUS,
    "new_value": ROW_NEW,
    "sanitised": ROW_SANITISED,
}
_SCALARS = (
    (1, "id", ROW_ID),
    (3, "action", ROW_ACTION),
    (4, "resource", ROW_RESOURCE),
    (5, "resource_id", ROW_RESOURCE_ID),
    (6, "created_at", ROW_CREATED),
)


# ---- comparing an event's columns with what was hashed ---------------------------------------


_PERSONAL_ROW = {"user_id": ROW_USER, "ip_address": ROW_IP, "user_agent": ROW_UA}


def _expected_canonical(
    row: VerifyRow, norm: Any = normalise_json, frag: Any = _Fragment, dumps: Any = _dumps
) -> bytes:
    """The canonical bytes the columns would produce (personal values as commitments)."""
    details, previous, new = row[ROW_DETAILS], row[ROW_PREVIOUS], row[ROW_NEW]
    sanitised = row[ROW_SANITISED]
    return canonical_form(
        row[ROW_ID],
        row[ROW_WORKSPACE],
        row[ROW_ACTION],
        row[ROW_RESOURCE],
        row[ROW_RESOURCE_ID],
        row[ROW_CREATED],
        row[ROW_USER],
        row[ROW_IP],
        row[ROW_UA],
        None if details is None else frag(norm(details)),
        None if previous is None else frag(norm(previous)),
        None if new is None else frag(norm(new)),
        None if sanitised is None else frag(norm(sanitised)),
        dumps=dumps,
    )


def _strict(data: str | bytes) -> Any:
    """JSON parsed so that 1 and 1.0 are equal (jsonb may rewrite one as the other) but true
    and 1 are not."""
    return json.loads(data, parse_float=Decimal, parse_int=Decimal)


def _same_json(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _column_differences(row: VerifyRow, hashed: list[Any]) -> tuple[list[str], list[str]]:
    """Columns that differ from the hashed form, and the personal values that were erased."""
    wrong = [name for index, name, r in _SCALARS if hashed[index] != row[r]]
    if hashed[C_WORKSPACE] != row[ROW_WORKSPACE]:
        wrong.append("workspace_id")
    erased: list[str] = []
    salt = row[ROW_SALT]
    for index, name in PERSONAL:
        value, committed = row[_PERSONAL_ROW[name]], hashed[index]
        if committed is None:
            if value is not None:
                wrong.append(name)
        elif value is None:
            if salt is None:
                erased.append(name)  # value and salt deleted together: what erasure does
            else:
                wrong.append(name)
        elif salt is None or value != committed:
            wrong.append(name)
    for index, name in JSON_PARTS:
        value, part = row[_JSON_ROW[name]], hashed[index]
        if value is None or part is None:
            if (value is None) != (part is None):
                wrong.append(name)
            continue
        if not _same_json(_strict(value), _strict(json.dumps(part))):
            wrong.append(name)
    return wrong, erased


def check_columns(row: VerifyRow, report: VerifyReport) -> None:
    data = row[ROW_CANONICAL]
    if data is None:
        return
    if data[:3] == b"[2,":
        _check_v2(row, row[ROW_CREATED], False, report)
        return
    try:
        if _expected_canonical(row) == data:
            return
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        pass  # e.g. created_at = 'infinity', beyond 64 bits in microseconds: explained below
    event_id = uuid.UUID(row[ROW_ID])
    chain = None if row[ROW_CHAIN] is None else uuid.UUID(row[ROW_CHAIN])
    workspace = None if chain in (None, NO_WORKSPACE) else chain
    try:
        hashed = orjson.loads(data)
        if not isinstance(hashed, list) or hashed[0] != CANONICAL_VERSION or len(hashed) != 14:
            raise ValueError("unknown canonical form")
        wrong, erased = _column_differences(row, hashed)
        ws_hashed = None if hashed[C_WORKSPACE] is None else uuid.UUID(hashed[C_WORKSPACE])
        if chain is not None and chain_of(ws_hashed) != chain:
            wrong.append("chain_id")
    except Exception:  # noqa: BLE001 - whatever a forged row holds, it is reported, not fatal
        report.problems.append(
            VerifyProblem(MODIFIED, "the stored canonical form is unreadable", event_id, workspace)
        )
        return
    if wrong:
        report.problems.append(
            VerifyProblem(
                MODIFIED,
                f"columns changed after the event was hashed: {', '.join(sorted(wrong))}",
                event_id,
                workspace,
                row[ROW_SEQ],
            )
        )
    elif erased:
        report.erased += 1
        report.erased_events.append((event_id, workspace, row[ROW_SEQ], tuple(erased)))


def _check_v2(row: VerifyRow, created_us: int, rebuild_json: bool, report: VerifyReport) -> None:
    if fast_match(row, created_us, rebuild_json):
        return
    event_id = uuid.UUID(row[ROW_ID])
    chain = None if row[ROW_CHAIN] is None else uuid.UUID(row[ROW_CHAIN])
    workspace = None if chain in (None, NO_WORKSPACE) else chain
    found = differences(row, created_us, rebuild_json)
    if found is None:
        report.problems.append(
            VerifyProblem(MODIFIED, "the stored canonical form is unreadable", event_id, workspace)
        )
        return
    wrong, erased, removed = found
    if removed:
        report.problems.append(
            VerifyProblem(
                MODIFIED,
                "values removed without a gdpr.erasure event covering them (their salts were"
                f" not zeroed, as erasure does): {', '.join(removed)}",
                event_id,
                workspace,
                row[ROW_SEQ],
            )
        )
    if chain is not None and "workspace_id" not in wrong:
        hashed_ws = None if row[ROW_WORKSPACE] is None else uuid.UUID(row[ROW_WORKSPACE])
        if chain_of(hashed_ws) != chain:
            wrong.append("chain_id")
    if wrong:
        report.problems.append(
            VerifyProblem(
                MODIFIED,
                f"columns changed after the event was hashed: {', '.join(sorted(wrong))}",
                event_id,
                workspace,
                row[ROW_SEQ],
            )
        )
    elif erased and not removed:
        report.erased += 1
        report.erased_events.append((event_id, workspace, row[ROW_SEQ], tuple(erased)))


_USER_TAG, _IP_TAG, _UA_TAG = (PERSONAL_TAGS[n] for n in ("user_id", "ip_address", "user_agent"))


def _pg_normalised(row: VerifyRow, sha256: Any = hashlib.sha256) -> VerifyRow:
    """A row as read from PostgreSQL, in the form ``check_columns`` compares: personal values
    as their commitments (with the row's salt) and ``created_at`` in Unix microseconds."""
    user, ip, ua, salt = row[ROW_USER], row[ROW_IP], row[ROW_UA], row[ROW_SALT] or b""
    return (
        row[ROW_ID],
        None if user is None else sha256(salt + _USER_TAG + user.encode()).hexdigest(),
        row[ROW_WORKSPACE],
        None if ip is None else sha256(salt + _IP_TAG + ip.encode()).hexdigest(),
        None if ua is None else sha256(salt + _UA_TAG + ua.encode()).hexdigest(),
        *row[ROW_ACTION:ROW_CREATED],
        row[ROW_CREATED] + PG_EPOCH_US,
        *row[ROW_SANITISED:],
    )


def check_pg_columns(
    row: VerifyRow,
    report: VerifyReport,
    sha256: Any = hashlib.sha256,
    dumps: Any = _dumps,
    loads: Any = orjson.loads,
    sort: int = orjson.OPT_SORT_KEYS,
    decode_error: Any = orjson.JSONDecodeError,
    encode_error: Any = orjson.JSONEncodeError,
) -> None:
    """``check_columns`` for a row as PostgreSQL stores it, with the common case (every column
    matches) done in one pass: the same bytes ``_expected_canonical`` builds, since embedding
    ``loads(text)`` in a dump with sorted keys writes exactly ``normalise_json(text)``. Any
    difference goes through ``check_columns`` to be explained."""
    data = row[ROW_CANONICAL]
    if data is None:
        return
    if data[:3] == b"[2,":
        _check_v2(row, row[ROW_CREATED] + PG_EPOCH_US, True, report)
        return
    user, ip, ua, salt = row[ROW_USER], row[ROW_IP], row[ROW_UA], row[ROW_SALT] or b""
    details, previous, new = row[ROW_DETAILS], row[ROW_PREVIOUS], row[ROW_NEW]
    sanitised = row[ROW_SANITISED]
    try:
        expected = canonical_form(
            row[ROW_ID],
            row[ROW_WORKSPACE],
            row[ROW_ACTION],
            row[ROW_RESOURCE],
            row[ROW_RESOURCE_ID],
            row[ROW_CREATED] + PG_EPOCH_US,
            None if user is None else sha256(salt + _USER_TAG + user.encode()).hexdigest(),
            None if ip is None else sha256(salt + _IP_TAG + ip.encode()).hexdigest(),
            None if ua is None else sha256(salt + _UA_TAG + ua.encode()).hexdigest(),
            None if details is None else loads(details),
            None if previous is None else loads(previous),
            None if new is None else loads(new),
            None if sanitised is None else loads(sanitised),
            dumps=dumps,
            option=sort,
        )
        if expected == data:
            return
    except (decode_error, encode_error):
        pass
    check_columns(_pg_normalised(row), report)
