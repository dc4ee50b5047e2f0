"""Who may look at what: the host's ``authorize`` decides, the viewer only narrows."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread


@dataclass(frozen=True)
class ViewerAccess:
    """What ``authorize(request)`` grants: an actor's name and the workspaces they may see.

    ``workspaces`` holds workspace ids (UUIDs or their text) or Slack team ids. They are the
    only workspaces the viewer will show: any other one named in a URL gets 404.
    ``all_workspaces=True`` is the operator's view of the whole log (``auditledger serve``).
    """

    actor: str
    workspaces: Sequence[str | uuid.UUID] = field(default_factory=tuple)
    all_workspaces: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.actor, str) or not self.actor.strip():
            raise ValueError("ViewerAccess.actor must name who is looking")
        if isinstance(self.workspaces, str | bytes):
            # A single id given bare would be read as its characters.
            raise TypeError("ViewerAccess.workspaces takes a list of workspace ids")


Authorize = Callable[[Any], "ViewerAccess | Awaitable[ViewerAccess | None] | None"]


async def call_authorize(authorize: Authorize, request: Any) -> ViewerAccess | None:
    """The host's answer, whether its function is sync or async."""
    target: Any = authorize if inspect.isroutine(authorize) else type(authorize).__call__
    if inspect.iscoroutinefunction(target):
        result = authorize(request)
    else:
        # A sync check may well query the host's database: keep it off the event loop.
        result = await anyio.to_thread.run_sync(authorize, request)
    if inspect.isawaitable(result):
        result = await result
    if result is not None and not isinstance(result, ViewerAccess):
        raise TypeError("authorize() must return a ViewerAccess or None")
    return result
