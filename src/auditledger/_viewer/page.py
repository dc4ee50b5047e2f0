"""The viewer's page, rendered on the server; every stored value goes through ``escape``.

No value read from the log is ever placed in a script, a style, an event handler or a URL
scheme: only in text and in quoted attributes, escaped. The page works without JavaScript
(filters are a GET form, pages are links); viewer.js adds the local-time toggle and opens rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import urlencode

from .badge import Badge
from .filters import FILTER_NAMES, Filters
from .records import iso_utc, summary
from .workspaces import Workspace

_LABELS = {
    "user_id": "User",
    "action": "Action",
    "action_prefix": "Action starts with",
    "resource": "Resource",
    "resource_id": "Resource id",
    "ip": "IP or network",
    "since": "Since (UTC)",
    "until": "Until (UTC)",
    "text": "Text",
}
_HINTS = {"since": "2026-11-01T09:30Z", "until": "2026-11-02", "ip": "10.0.0.0/8"}
MAX_BACK = 40  # cursors kept for "newer"; an older stack would make URLs too long


@dataclass
class PageView:
    root: str
    workspace: Workspace | None  # None: every workspace (operator)
    choices: Sequence[Workspace]
    all_workspaces: bool
    filters: Filters
    events: Sequence[Any] = ()
    cursor: str | None = None
    next_cursor: str | None = None
    back: list[str] = field(default_factory=list)
    badge: Badge | None = None
    show_badge: bool = True
    error: str | None = None
    limit: int = 50


def _a(value: object) -> str:
    return escape(str(value), quote=True)


def _workspace_param(view: PageView) -> dict[str, str]:
    return {} if view.workspace is None else {"workspace": str(view.workspace.id)}


def _href(view: PageView, path: str, extra: dict[str, str] | None = None) -> str:
    params = {**_workspace_param(view), **view.filters.as_params(), **(extra or {})}
    query = urlencode(params)
    return f"{view.root}/{path}" + (f"?{query}" if query else "")


def _page_href(view: PageView, cursor: str | None, back: list[str]) -> str:
    extra: dict[str, Any] = {}
    if cursor:
        extra["cursor"] = cursor
    params = {**_workspace_param(view), **view.filters.as_params(), **extra}
    if view.limit != 50:
        params["limit"] = str(view.limit)
    pairs = list(params.items()) + [("back", b) for b in back]
    return f"{view.root}/?{urlencode(pairs)}"


def render_page(view: PageView) -> str:
    title = "Audit log" + (f": {view.workspace.label}" if view.workspace else ": every workspace")
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_a(title)}</title>",
        f'<link rel="stylesheet" href="{_a(view.root)}/static/viewer.css">',
        f'<script src="{_a(view.root)}/static/viewer.js" defer></script>',
        "</head>",
        f'<body data-root="{_a(view.root)}"'
        + (f' data-workspace="{_a(view.workspace.id)}"' if view.workspace else "")
        + ">",
        '<a class="skip" href="#events">Skip to the events</a>',
        "<header>",
        f"<h1>{_a(title)}</h1>",
        _badge(view.badge) if view.show_badge else "",
        "</header>",
        "<main>",
        _form(view),
    ]
    if view.error:
        parts.append(f'<p class="error" role="alert">{_a(view.error)}</p>')
    parts += [_toolbar(view), _table(view), _pager(view), "</main></body></html>"]
    return "\n".join(parts)


def _badge(badge: Badge | None) -> str:
    if badge is None:
        text, cls, title = "Chain: checking…", "checking", "A verify of this chain is running."
    elif badge.state == "intact":
        when = f" up to {badge.up_to:%Y-%m-%d %H:%M:%S} UTC" if badge.up_to else ""
        text, cls = f"Chain intact{when}", "intact"
        title = (
            "Chains and signed checkpoints verified."
            if badge.signatures_checked
            else "Chains verified; signatures were not checked (no public keys given)."
        )
        if not badge.signatures_checked:
            text += " (signatures not checked)"
    elif badge.state == "problems":
        plural = "" if badge.problems == 1 else "s"
        text, cls, title = (
            f"Chain: {badge.problems} problem{plural}",
            "problems",
            badge.first_problem,
        )
    else:
        text, cls, title = "Chain: check failed to run", "failed", "See the server's log."
    return (
        f'<p id="chain-badge" class="badge badge-{cls}" role="status" title="{_a(title)}">'
        f"{_a(text)}</p>"
    )


def _form(view: PageView) -> str:
    out = [
        f'<form class="filters" method="get" action="{_a(view.root)}/" aria-label="Filters">',
    ]
    if view.all_workspaces or len(view.choices) > 1:
        out.append('<label for="f-workspace">Workspace</label>')
        out.append('<select id="f-workspace" name="workspace">')
        if view.all_workspaces:
            selected = " selected" if view.workspace is None else ""
            out.append(f'<option value=""{selected}>Every workspace</option>')
        for ws in view.choices:
            is_it = view.workspace is not None and ws.id == view.workspace.id
            out.append(
                f'<option value="{_a(ws.id)}"{" selected" if is_it else ""}>{_a(ws.label)}</option>'
            )
        out.append("</select>")
    elif view.workspace is not None:
        out.append(f'<input type="hidden" name="workspace" value="{_a(view.workspace.id)}">')
    values = view.filters.as_params()
    for name in FILTER_NAMES:
        hint = f' placeholder="{_a(_HINTS[name])}"' if name in _HINTS else ""
        out.append(
            f'<span class="field"><label for="f-{name}">{_LABELS[name]}</label>'
            f'<input id="f-{name}" name="{name}" type="text" value="{_a(values.get(name, ""))}"'
            f"{hint}></span>"
        )
    clear = _a(f"{view.root}/?" + urlencode(_workspace_param(view)))
    out.append(
        '<span class="actions"><button type="submit">Apply filters</button>'
        f'<a href="{clear}">Clear</a></span></form>'
    )
    return "\n".join(out)


def _toolbar(view: PageView) -> str:
    exports = ""
    if view.workspace is not None:
        links = [
            f'<a class="export" href="{_a(_href(view, "export", {"format": fmt}))}"'
            f" download>{label}</a>"
            for fmt, label in (("jsonl", "JSONL"), ("csv", "CSV"))
        ]
        # A bundle is a stretch of the chain that verifies offline: only the time range applies.
        span = {k: v for k, v in view.filters.as_params().items() if k in ("since", "until")}
        bundle = f"{view.root}/export?" + urlencode(
            {**_workspace_param(view), **span, "format": "bundle"}
        )
        links.append(
            f'<a class="export" href="{_a(bundle)}" download'
            ' title="Every event of the time range, with what verifies it offline">'
            "Bundle (ZIP)</a>"
        )
        exports = (
            '<span class="exports" role="group" aria-label="Export what the filters select">'
            "Export: " + " ".join(links) + "</span>"
        )
    return (
        '<div class="toolbar">'
        '<button type="button" id="tz-toggle" aria-pressed="false" hidden>'
        "Show local time</button>"
        f"{exports}</div>"
    )


def _table(view: PageView) -> str:
    caption = f"{len(view.events)} event{'' if len(view.events) == 1 else 's'}, newest first"
    out = [
        '<table id="events">',
        f"<caption>{_a(caption)}</caption>",
        '<thead><tr><th scope="col" id="time-head">Time (UTC)</th><th scope="col">Actor</th>'
        '<th scope="col">Action</th><th scope="col">Resource</th><th scope="col">IP</th>'
        '<th scope="col">Summary</th><th scope="col"><span class="sr">Record</span></th>'
        "</tr></thead><tbody>",
    ]
    if not view.events:
        out.append('<tr><td colspan="7" class="empty">No events match.</td></tr>')
    for e in view.events:
        eid = _a(e.id)
        resource = ":".join(x for x in (e.resource, e.resource_id) if x)
        stamp = iso_utc(e.created_at)
        out.append(
            f'<tr class="event" data-id="{eid}">'
            f'<td data-label="Time"><time datetime="{_a(stamp)}">'
            f"{e.created_at:%Y-%m-%d %H:%M:%S}</time></td>"
            f'<td data-label="Actor">{_a(e.user_id or "")}</td>'
            f'<td data-label="Action">{_a(e.action)}</td>'
            f'<td data-label="Resource">{_a(resource)}</td>'
            f'<td data-label="IP">{_a(e.ip_address or "")}</td>'
            f'<td data-label="Summary" class="summary">{_a(summary(e))}</td>'
            f'<td><button type="button" class="open" aria-expanded="false"'
            f' aria-controls="detail-{eid}" data-id="{eid}">Details'
            f'<span class="sr"> of {_a(e.action)} at {_a(stamp)}</span></button></td></tr>'
            f'<tr class="detail" id="detail-{eid}" hidden><td colspan="7"></td></tr>'
        )
    out.append("</tbody></table>")
    return "\n".join(out)


def _pager(view: PageView) -> str:
    links = []
    if view.cursor:
        back = view.back[:-1]
        previous = view.back[-1] if view.back else None
        # "-" stands for the first page in the stack of cursors.
        target = None if previous in (None, "-") else previous
        links.append(f'<a rel="prev" href="{_a(_page_href(view, target, back))}">← Newer</a>')
    else:
        links.append('<span class="disabled" aria-disabled="true">← Newer</span>')
    if view.next_cursor:
        back = [*view.back, view.cursor or "-"][-MAX_BACK:]
        href = _page_href(view, view.next_cursor, back)
        links.append(f'<a rel="next" href="{_a(href)}">Older →</a>')
    else:
        links.append('<span class="disabled" aria-disabled="true">Older →</span>')
    return '<nav class="pager" aria-label="Pages">' + " ".join(links) + "</nav>"
