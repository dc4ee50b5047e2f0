"""Verifying a PostgreSQL log with several processes, each walking a share of it.

Verification is CPU-bound Python (a hash per event, the columns compared with what was hashed),
so one process uses one core whatever the machine has. Chains are independent, and a chain
can be walked in ranges of positions (``spans``): the log is dealt to the processes as whole
chains, and a chain bigger than one share as ranges, so a log that is mostly one workspace is
shared too. Each process reads only its share; the reports are merged before the checkpoints
are compared.
"""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from multiprocessing.context import BaseContext
from typing import Any

from .chains import ChainEnds, Starts, walk_part
from .report import VerifyReport
from .source import Source
from .spans import RangeResult, Share, ShareResult, merge_ranges, plan, walk_share

# Set in each worker process by its initializer: rows walked so far, for the progress bar.
_walked: Any = None


def walk_log(
    source: Source,
    wanted: dict[uuid.UUID, set[int]],
    workspace: uuid.UUID | None,
    report: VerifyReport,
    progress: Callable[[int, int], None] | None,
    total: int,
    *,
    workers: int,
    starts: Starts | None = None,
) -> ChainEnds:
    shares = None
    if workers > 1 and source.postgres and workspace is None:
        shares = _partition(source, workers)
    done = [0]

    def tick(rows: int, others: int = 0) -> None:
        done[0] += rows
        if progress is not None:
            seen = done[0] + others
            progress(seen, max(total, seen))

    if shares is None:
        return walk_part(
            source.rows(workspace), source.postgres, report, wanted, workspace, tick, starts
        )
    context = _context()
    walked = context.Value("q", 0)

    def others() -> int:
        with walked.get_lock():
            return int(walked.value)

    ends: ChainEnds = {}
    ranges: list[RangeResult] = []
    # One snapshot for every process: the ranges of a chain are read as of one moment.
    with (
        source.shared_snapshot() as snapshot,
        ProcessPoolExecutor(
            len(shares) - 1, mp_context=context, initializer=_start_worker, initargs=(walked,)
        ) as pool,
    ):
        url = source.url_text()
        futures = [
            pool.submit(_walk_share, url, share, wanted, starts, snapshot) for share in shares[1:]
        ]
        results = [walk_share(source, shares[0], wanted, starts, lambda n: tick(n, others()))]
        for future in futures:
            while True:
                try:
                    results.append(future.result(timeout=0.25))
                    break
                except FutureTimeout:
                    tick(0, others())
    for result in results:
        share = result.report
        report.events += share.events
        report.erased += share.erased
        report.erased_events.extend(share.erased_events)
        report.problems.extend(share.problems)
        ends.update(result.ends)
        ranges.extend(result.ranges)
    merge_ranges(ranges, report, ends)
    tick(0, others())
    return ends


def _partition(source: Source, workers: int) -> list[Share] | None:
    """The log dealt to ``workers`` shares (see ``spans.plan``); None when fewer than two
    shares would have any work."""
    return plan(source.extents(), workers)


def _context() -> BaseContext:
    # fork starts a worker in milliseconds (spawn re-imports everything, ~0.3 s each), and is
    # safe while this is the only thread: nothing can hold a lock the child would inherit.
    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _start_worker(walked: Any) -> None:
    global _walked  # the per-process progress counter
    _walked = walked


def _walk_share(
    url: str,
    share: Share,
    wanted: dict[uuid.UUID, set[int]],
    starts: Starts | None,
    snapshot: str | None,
) -> ShareResult:
    def tick(rows: int) -> None:
        if _walked is not None:
            with _walked.get_lock():
                _walked.value += rows

    return walk_share(Source(url, snapshot), share, wanted, starts, tick)
