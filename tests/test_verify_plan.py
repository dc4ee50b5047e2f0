"""How ``verify`` deals a PostgreSQL log to its processes (``_read/verify/spans.plan``): a
chain bigger than a process's fair part is cut into ranges that cover it once, so a log that
is mostly one workspace is shared too (the walks themselves: tests/test_tamper.py)."""

from __future__ import annotations

import itertools

from auditledger._read.verify.source import Extent
from auditledger._read.verify.spans import MIN_RANGE, Share, plan

BIG = "11111111-1111-1111-1111-111111111111"


def _log(big: int, others: int = 20, each: int = 1_000) -> list[Extent]:
    small = [(f"00000000-0000-0000-0000-{i:012d}", 1, each, each) for i in range(others)]
    return [(BIG, 1, big, big), *small, (None, None, None, 3)]


def _covered(shares: list[Share], chain: str) -> list[tuple[int | None, int | None]]:
    return sorted(
        ((lo, hi) for s in shares for c, lo, hi in s.ranges if c == chain),
        key=lambda r: -1 if r[0] is None else r[0],
    )


def test_a_dominant_chain_is_cut_into_one_range_per_process() -> None:
    for workers in (2, 4):
        shares = plan(_log(900_000), workers)
        assert shares is not None
        assert len(shares) == workers
        ranges = _covered(shares, BIG)
        assert len(ranges) == workers
        # Contiguous, open at both ends: every position (and any beyond) is walked once.
        assert ranges[0][0] is None
        assert ranges[-1][1] is None
        for (_, hi), (lo, _) in itertools.pairwise(ranges):
            assert hi is not None
            assert lo == hi + 1
        assert all(BIG not in s.part[0] for s in shares)
        loads = [s.load for s in shares]
        assert max(loads) - min(loads) <= 1_000  # balanced within one small chain
        assert sum(s.part[1] for s in shares) == 1  # the rows in no chain: one share


def test_chains_of_a_spread_log_stay_whole() -> None:
    shares = plan(_log(1_000, others=40), 2)
    assert shares is not None
    assert all(not s.ranges for s in shares)
    assert sorted(c for s in shares for c in s.part[0]) == sorted(
        [BIG, *(f"00000000-0000-0000-0000-{i:012d}" for i in range(40))]
    )


def test_no_range_smaller_than_the_minimum_and_one_process_is_no_plan() -> None:
    small = plan(_log(2 * MIN_RANGE - 1, others=0), 4)
    assert small is not None
    assert all(not s.ranges for s in small)
    assert plan(_log(900_000), 1) is None
    assert plan([], 4) is None
