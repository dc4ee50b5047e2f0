"""Retention cuts as the verifier sees them: each chain starts at its newest cut whose
signature holds (see ``_chain/cuts.py``); a cut that does not hold is a problem, and the
events it claims expired are then reported missing like any other deletion."""

from __future__ import annotations

import uuid
from typing import Any

from ..._chain.cuts import Cut
from .chains import Starts
from .report import BAD_SIGNATURE, VerifyProblem, VerifyReport


def chain_starts(cuts: list[Cut], keys: dict[str, Any], report: VerifyReport) -> Starts:
    starts: dict[uuid.UUID, tuple[int, bytes, Cut]] = {}
    for cut in cuts:
        error = cut.verify(keys)
        if error:
            report.problems.append(
                VerifyProblem(BAD_SIGNATURE, f"retention cut: {error}", checkpoint_id=cut.id)
            )
            continue
        report.cuts += 1
        if cut.chain_id is None or cut.first_seq is None or cut.previous_hash is None:
            continue  # the quarantine's horizon
        known = starts.get(cut.chain_id)
        if known is None or known[0] < cut.first_seq:
            starts[cut.chain_id] = (cut.first_seq, cut.previous_hash, cut)
    for chain_id, (first, _, cut) in sorted(starts.items(), key=lambda item: str(item[0])):
        report.notes.append(
            f"chain {chain_id} starts at position {first}: retention cut {cut.id} signed"
            f" {cut.created_at:%Y-%m-%d %H:%M:%S} UTC (events before"
            f" {cut.expired_before:%Y-%m-%d %H:%M:%S} UTC expired)"
        )
    return {chain_id: (first, previous) for chain_id, (first, previous, _) in starts.items()}
