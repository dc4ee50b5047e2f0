"""Verifying a PostgreSQL log with several processes, each walking a share of the chains.

Verification is CPU-bound Python (a hash per event, the columns compared with what was hashed),
so one process uses one core whatever the machine has. Chains are independent, so the log is
split by whole chains, balanced by their sizes, and each share is walked by its own process
reading only its chains; the reports are merged before the checkpoints are compared. One chain
is never split: a log that is mostly one workspace gains little.
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
from .source import Part, Source

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
    parts = None
    if workers > 1 and source.postgres and workspace is None:
        parts = _partition(source, workers)
    done = [0]

    def tick(rows: int, others: int = 0) -> None:
        done[0] += rows
        if progress is not None:
            seen = done[0] + others
            progress(seen, max(total, seen))

    if parts is None:
        return walk_part(
            source.rows(workspace), source.postgres, report, wanted, workspace, tick, starts
        )
    context = _context()
    walked = context.Value("q", 0)

    def others() -> int:
        with walked.get_lock():
            return int(walked.value)

    with ProcessPoolExecutor(
        len(parts) - 1, mp_context=context, initializer=_start_worker, initargs=(walked,)
    ) as pool:
        url = source.url_text()
        futures = [pool.submit(_walk_share, url, part, wanted, starts) for part in parts[1:]]
        ends = walk_part(
            source.rows(None, parts[0]),
            True,
            report,
            wanted,
            None,
            lambda rows: tick(rows, others()),
            starts,
        )
        for future in futures:
            while True:
                try:
                    share, share_ends = future.result(timeout=0.25)
                    break
                except FutureTimeout:
                    tick(0, others())
            report.events += share.events
            report.erased += share.erased
            report.erased_events.extend(share.erased_events)
            report.problems.extend(share.problems)
            ends.update(share_ends)
    tick(0, others())
    return ends


def _partition(source: Source, workers: int) -> list[Part] | None:
    """Chains dealt to ``workers`` shares, largest first to the lightest share; None when
    fewer than two shares would have any work."""
    sizes = source.chain_sizes()
    shares: list[tuple[int, list[str], bool]] = [(0, [], False) for _ in range(workers)]
    for chain, size in sorted(sizes, key=lambda item: -item[1]):
        lightest = min(range(workers), key=lambda i: shares[i][0])
        load, chains, unchained = shares[lightest]
        if chain is None:
            shares[lightest] = (load + size, chains, True)
        else:
            shares[lightest] = (load + size, [*chains, chain], unchained)
    parts = [(chains, unchained) for load, chains, unchained in shares if load > 0]
    return parts if len(parts) > 1 else None


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
    url: str, part: Part, wanted: dict[uuid.UUID, set[int]], starts: Starts | None = None
) -> tuple[VerifyReport, ChainEnds]:
    report = VerifyReport()

    def tick(rows: int) -> None:
        if _walked is not None:
            with _walked.get_lock():
                _walked.value += rows

    ends = walk_part(Source(url).rows(None, part), True, report, wanted, None, tick, starts)
    return report, ends
