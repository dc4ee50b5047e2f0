"""Sharing a PostgreSQL log between verifying processes: whole chains, and a chain too big
for one share cut into ranges of positions, each walked by whichever process it is dealt to.

A range is walked from the state one walk of the whole chain would have reached at its first
position, rebuilt from the (at most two) linked rows before it: the hash its first row links
to, the hash before that, and whether the row before it linked. Hashes are only compared, so
this costs two index probes, not a walk. What a range cannot decide alone is decided once
every range of the chain is in: failures are classified together (a reordered pair may
straddle a boundary), and a renumbering is reported once per chain, at its first position.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from ..._db.rows import ROW_HASH, ROW_SEQ
from .chains import ChainEnds, Starts, _ChainCheck, _Failed, walk_part
from .columns import check_pg_columns
from .report import VerifyProblem, VerifyReport
from .source import Extent, Part, Source, VerifyRow

# A range smaller than this is not worth cutting: a range costs a connection, a query and
# the probe for the rows before it (milliseconds), about what 10,000 rows take to check.
MIN_RANGE = 10_000
_TICK = 20_000
_BEFORE_ALL = -(2**63)  # where the first range of a chain sorts

# One chain's positions first..last (None: from its start, or to its end).
Range = tuple[str, int | None, int | None]


@dataclass
class Share:
    """What one process walks: whole chains (and perhaps the rows in no chain), and ranges."""

    part: Part = field(default_factory=lambda: ([], False))
    ranges: list[Range] = field(default_factory=list)
    load: int = 0

    def empty(self) -> bool:
        return not self.part[0] and not self.part[1] and not self.ranges


@dataclass
class RangeResult:
    """A range's walk, before its chain's other ranges are merged in."""

    chain_id: uuid.UUID
    first: int
    report: VerifyReport
    head: int
    hashes: dict[int, tuple[bytes, uuid.UUID]]
    failed: list[_Failed]
    shift: int | None  # index in report.problems of its renumbering, if it found one


@dataclass
class ShareResult:
    report: VerifyReport
    ends: ChainEnds
    ranges: list[RangeResult]


def plan(extents: list[Extent], workers: int, min_range: int | None = None) -> list[Share] | None:
    """The log dealt to ``workers`` shares, biggest pieces first to the lightest share: a
    chain bigger than a share's fair part (and than two ranges of ``MIN_RANGE``) is cut into
    ranges of about that part. None when fewer than two shares would have work."""
    smallest = MIN_RANGE if min_range is None else min_range
    total = sum(size for *_, size in extents)
    if workers < 2 or total == 0:
        return None
    fair = -(-total // workers)
    pieces: list[tuple[int, str | None, Range | None]] = []
    for chain, first, last, size in extents:
        if chain is None or first is None or last is None or size <= fair or size < 2 * smallest:
            pieces.append((size, chain, None))
            continue
        count = max(2, min(workers, -(-size // fair), size // smallest))
        width = -(-size // count)
        bounds = [first + i * width for i in range(1, count)]
        starts: list[int | None] = [None, *bounds]
        ends: list[int | None] = [*(b - 1 for b in bounds), None]
        for low, high in zip(starts, ends, strict=True):
            lo, hi = low if low is not None else first, high if high is not None else last
            pieces.append((hi - lo + 1, chain, (chain, low, high)))
    shares = [Share() for _ in range(workers)]
    for size, chain, span in sorted(pieces, key=lambda piece: -piece[0]):
        share = min(shares, key=lambda s: s.load)
        share.load += size
        if span is not None:
            share.ranges.append(span)
        elif chain is None:
            share.part = (share.part[0], True)
        else:
            share.part[0].append(chain)
    busy = [s for s in shares if not s.empty()]
    return busy if len(busy) > 1 else None


def walk_share(
    source: Source,
    share: Share,
    wanted: dict[uuid.UUID, set[int]],
    starts: Starts | None,
    tick: Callable[[int], None],
) -> ShareResult:
    report = VerifyReport()
    ends: ChainEnds = {}
    if share.part[0] or share.part[1]:
        ends = walk_part(source.rows(None, share.part), True, report, wanted, None, tick, starts)
    ranges = [walk_range(source, span, wanted, starts or {}, tick) for span in share.ranges]
    return ShareResult(report, ends, ranges)


class _RangeCheck(_ChainCheck):
    """A chain's walk that remembers which problem was its renumbering (reported once per
    chain: only the range that comes first in the chain keeps it)."""

    shift_at: int | None = None

    def problem(self, kind: str, detail: str, event_id: uuid.UUID | None, seq: int | None) -> None:
        if self.shift_reported and self.shift_at is None:
            self.shift_at = len(self.report.problems)
        super().problem(kind, detail, event_id, seq)


def walk_range(
    source: Source,
    span: Range,
    wanted: dict[uuid.UUID, set[int]],
    starts: Starts,
    tick: Callable[[int], None],
) -> RangeResult:
    chain, first, last = span
    chain_id = uuid.UUID(chain)
    report = VerifyReport()
    start = starts.get(chain_id)
    check = _resumed(source, chain_id, report, wanted.get(chain_id, set()), start, first)
    done = 0
    gc_was_enabled = gc.isenabled()
    gc.disable()  # as walk_part: millions of short-lived tuples
    try:
        for row in source.range_rows(chain, first, last):
            check_pg_columns(row, report)
            check.offer(row)
            done += 1
            if done % _TICK == 0:
                tick(_TICK)
    finally:
        if gc_was_enabled:
            gc.enable()
    for seq in sorted(check.pending):  # as _ChainCheck.drain, without classifying yet
        check.add(check.pending[seq])
    check.pending.clear()
    tick(done % _TICK)
    report.events += done
    low = first if first is not None else _BEFORE_ALL
    return RangeResult(
        chain_id, low, report, check.head, check.hashes, check.failed, check.shift_at
    )


def _resumed(
    source: Source,
    chain_id: uuid.UUID,
    report: VerifyReport,
    wanted: set[int],
    start: tuple[int, bytes] | None,
    first: int | None,
) -> _RangeCheck:
    """A walk of the chain in the state one whole walk would be in on reaching ``first``."""
    check = _RangeCheck(chain_id, report, wanted, start)
    floor = check.floor
    if first is None or first <= floor:
        return check
    before: list[VerifyRow] = source.before(str(chain_id), floor, first)
    if not before:
        return check  # nothing linked since the start: the walk is still at it
    last_row = before[-1]
    if len(before) == 2:
        # After the row before it, a walk expects the next position and links to its hash,
        # whether or not that row itself linked.
        earlier = before[0]
        check = _RangeCheck(chain_id, report, wanted, (earlier[ROW_SEQ] + 1, earlier[ROW_HASH]))
    # The last row before the range is walked into a scratch report (its own range reports
    # it): that leaves previous, before_previous, previous_ok and previous_id as they would
    # be in one walk.
    check.report = VerifyReport()
    check.add(last_row)
    check.report = report
    check.failed = []
    check.shift_reported = False
    check.shift_at = None
    check.hashes = {}
    check.floor = floor
    check.head = 0
    return check


def merge_ranges(results: list[RangeResult], report: VerifyReport, ends: ChainEnds) -> None:
    """Each chain's ranges, in order, into ``report`` and ``ends`` as one walk leaves them."""
    by_chain: dict[uuid.UUID, list[RangeResult]] = {}
    for result in results:
        by_chain.setdefault(result.chain_id, []).append(result)
    for chain_id, ranges in by_chain.items():
        ranges.sort(key=lambda r: r.first)
        shifted = False
        failed: list[_Failed] = []
        head, hashes = 0, {}
        for r in ranges:
            problems: list[VerifyProblem] = r.report.problems
            if r.shift is not None:
                if shifted:  # a renumbering already reported earlier in the chain
                    problems = problems[: r.shift] + problems[r.shift + 1 :]
                shifted = True
            report.events += r.report.events
            report.erased += r.report.erased
            report.erased_events.extend(r.report.erased_events)
            report.problems.extend(problems)
            failed.extend(r.failed)
            head = max(head, r.head)
            hashes.update(r.hashes)
        whole = _ChainCheck(chain_id, report, set())
        whole.failed = failed
        whole.finish()
        ends[chain_id] = (head, hashes)
