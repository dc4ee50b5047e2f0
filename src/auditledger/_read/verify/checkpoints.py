"""Checking checkpoints: their signatures, the external copy against the stored one, and
the chain heads they signed against the chains as walked (truncation, rewriting)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from ..._chain.canonical import NO_WORKSPACE
from ..._chain.checkpoints import Checkpoint
from .chains import ChainEnds
from .report import (
    BAD_SIGNATURE,
    MISSING,
    MODIFIED,
    REWRITTEN,
    TRUNCATED,
    VerifyProblem,
    VerifyReport,
)


def check_signatures(
    stored: list[Checkpoint],
    external: list[Checkpoint],
    keys: dict[str, Any],
    report: VerifyReport,
    checkpoints_file: str | os.PathLike[str] | None,
) -> list[tuple[str, Checkpoint]]:
    """Checkpoints whose signature holds, each with a label saying where it came from."""
    good: list[tuple[str, Checkpoint]] = []
    by_id = {c.id: c for c in stored}
    for c in stored:
        error = c.verify(keys)
        report.checkpoints += 1
        if error:
            report.problems.append(
                VerifyProblem(BAD_SIGNATURE, f"stored checkpoint: {error}", checkpoint_id=c.id)
            )
        else:
            good.append((f"stored checkpoint {c.id} ({c.created_at:%Y-%m-%d %H:%M:%S} UTC)", c))
    name = Path(checkpoints_file).name if checkpoints_file is not None else ""
    for number, c in enumerate(external, 1):
        report.external_checkpoints += 1
        error = c.verify(keys)
        if error:
            report.problems.append(
                VerifyProblem(
                    BAD_SIGNATURE, f"checkpoint {number} of {name}: {error}", checkpoint_id=c.id
                )
            )
            continue
        good.append((f"checkpoint {number} of {name} ({c.created_at:%Y-%m-%d %H:%M:%S} UTC)", c))
        twin = by_id.get(c.id)
        if twin is None:
            report.problems.append(
                VerifyProblem(
                    MISSING,
                    f"checkpoint {number} of {name} is no longer stored in the database",
                    checkpoint_id=c.id,
                )
            )
        elif (twin.body, twin.signature) != (c.body, c.signature):
            report.problems.append(
                VerifyProblem(
                    MODIFIED,
                    f"checkpoint {number} of {name} differs from the stored copy",
                    checkpoint_id=c.id,
                )
            )
    return good


def check_heads(
    good: list[tuple[str, Checkpoint]],
    chains: ChainEnds,
    workspace: uuid.UUID | None,
    report: VerifyReport,
) -> None:
    seen: set[tuple[uuid.UUID, int]] = set()
    for label, checkpoint in good:
        for chain_id, seq, digest in checkpoint.heads:
            if workspace is not None and chain_id != workspace:
                continue
            ws = None if chain_id == NO_WORKSPACE else chain_id
            chain = chains.get(chain_id)
            head = chain[0] if chain is not None else 0
            if head < seq:
                if (chain_id, -seq) in seen:
                    continue
                seen.add((chain_id, -seq))
                report.problems.append(
                    VerifyProblem(
                        TRUNCATED,
                        f"truncated after {label}: it signed position {seq}, the chain now"
                        f" ends at {head}",
                        workspace_id=ws,
                        seq=seq,
                        checkpoint_id=checkpoint.id,
                    )
                )
                continue
            assert chain is not None
            found = chain[1].get(seq)
            if found is None or found[0] == digest or (chain_id, seq) in seen:
                continue  # a missing position is reported by the chain walk
            seen.add((chain_id, seq))
            report.problems.append(
                VerifyProblem(
                    REWRITTEN,
                    f"the chain up to position {seq} differs from what {label} signed: events"
                    " at or before this one were changed and the chain recomputed",
                    event_id=found[1],
                    workspace_id=ws,
                    seq=seq,
                    checkpoint_id=checkpoint.id,
                )
            )
