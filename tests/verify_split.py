"""Verifying a PostgreSQL log with its chains cut into ranges of positions at chosen places,
to compare with one process walking everything (tests/test_tamper.py, test_retention.py).

The plan is made here rather than by ``spans.plan`` (which cuts only a chain bigger than a
process's fair part, and only into ranges of 50,000 positions or more): the walking, the
resuming at each range's first position and the merging are the code under test.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

from auditledger._read.verify import parallel
from auditledger._read.verify.report import VerifyReport
from auditledger._read.verify.run import verify_log
from auditledger._read.verify.source import Source
from auditledger._read.verify.spans import Share

WORKERS = 4


def cut_plan(width: int, at: Iterable[int] = ()) -> Callable[[Source, int], list[Share]]:
    """Every chain cut into ranges every ``width`` positions, and at each position ``at``
    (a range starts there), dealt round robin to the processes with the rest."""
    extra = set(at)

    def partition(source: Source, workers: int) -> list[Share]:
        shares = [Share() for _ in range(WORKERS)]
        deal = itertools.cycle(shares)
        for chain, first, last, _ in source.extents():
            if chain is None or first is None or last is None:
                share = next(deal)
                if chain is None:
                    share.part = (share.part[0], True)
                else:
                    share.part[0].append(chain)
                continue
            cuts = sorted({*range(first + width, last + 1, width), *extra} - {first})
            cuts = [c for c in cuts if first < c <= last]
            bounds: list[int | None] = [None, *cuts]
            ends: list[int | None] = [*(c - 1 for c in cuts), None]
            for low, high in zip(bounds, ends, strict=True):
                next(deal).ranges.append((chain, low, high))
        return shares

    return partition


def verify_cut(url: str, width: int, at: Iterable[int] = (), **options: Any) -> VerifyReport:
    original = parallel._partition
    parallel._partition = cut_plan(width, at)  # type: ignore[assignment]
    try:
        return verify_log(url, workers=WORKERS, **options)
    finally:
        parallel._partition = original


def summary(report: VerifyReport) -> tuple[Any, ...]:
    return (
        report.events, report.chains, report.erased, report.cuts,
        sorted(map(repr, report.problems)), report.notes,
    )  # fmt: skip


def assert_same_when_cut(
    url: str, width: int, at: Iterable[int] = (), **options: Any
) -> VerifyReport:
    """The report of one process, after checking that the cut walk found the same."""
    one = verify_log(url, workers=1, **options)
    cut = verify_cut(url, width, at, **options)
    assert summary(cut) == summary(one)
    return one
