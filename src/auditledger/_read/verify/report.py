"""What ``verify`` found: the kinds of problem, each problem, and the report of a run."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

# Kinds of problem.
MODIFIED = "modified"
MISSING = "missing"
INSERTED = "inserted"
REORDERED = "reordered"
TRUNCATED = "truncated"
REWRITTEN = "rewritten"
BAD_SIGNATURE = "bad_signature"


@dataclass(frozen=True)
class VerifyProblem:
    """One thing found wrong. ``workspace_id`` is None for the chain of events without one."""

    kind: str
    detail: str
    event_id: uuid.UUID | None = None
    workspace_id: uuid.UUID | None = None
    seq: int | None = None
    checkpoint_id: uuid.UUID | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("event_id", "workspace_id", "checkpoint_id"):
            if out[key] is not None:
                out[key] = str(out[key])
        return out


@dataclass
class VerifyReport:
    events: int = 0
    chains: int = 0
    checkpoints: int = 0
    external_checkpoints: int = 0
    erased: int = 0
    cuts: int = 0
    problems: list[VerifyProblem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # Events with values removed, as (event id, workspace, position, fields): each must be
    # covered by a gdpr.erasure event (checked once every share of the log is walked).
    erased_events: list[tuple[Any, ...]] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "chains": self.chains,
            "checkpoints": self.checkpoints,
            "external_checkpoints": self.external_checkpoints,
            "erased": self.erased,
            "cuts": self.cuts,
            "problems": [p.to_dict() for p in self.problems],
            "notes": self.notes,
        }
