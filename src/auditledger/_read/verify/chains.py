"""Walking the chains: each event's link recomputed from its stored canonical bytes, and a
broken link explained (modified, inserted, missing, reordered) from the little kept."""

from __future__ import annotations

import gc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..._chain.canonical import NO_WORKSPACE
from ..._chain.links import genesis, link
from ..._db.rows import ROW_CANONICAL, ROW_CHAIN, ROW_HASH, ROW_ID, ROW_SEQ, ROW_WORKSPACE
from .columns import check_columns, check_pg_columns
from .report import INSERTED, MISSING, MODIFIED, REORDERED, VerifyProblem, VerifyReport
from .source import VerifyRow

_MAX_CLASSIFIED = 64  # failing events per chain searched for their true position
# What a share's walk leaves for the checkpoint comparison: each chain's head position and the
# stored hashes at the positions checkpoints name.
ChainEnds = dict[uuid.UUID, tuple[int, dict[int, tuple[bytes, uuid.UUID]]]]
# Where chains start after retention: the first kept position and the hash before it.
Starts = dict[uuid.UUID, tuple[int, bytes]]


# ---- the chains ----------------------------------------------------------------------------


@dataclass
class _Failed:
    event_id: uuid.UUID
    seq: int
    stored: bytes
    data: bytes
    previous: bytes
    before_previous: bytes


class _ChainCheck:
    """Walks one chain in order; keeps only the little it needs to explain a failure."""

    def __init__(
        self,
        chain_id: uuid.UUID,
        report: VerifyReport,
        wanted: set[int],
        start: tuple[int, bytes] | None = None,
    ) -> None:
        self.chain_id = chain_id
        self.workspace = None if chain_id == NO_WORKSPACE else chain_id
        self.report = report
        # A signed cut moves the start: the events before it expired (retention).
        self.floor, self.previous = start if start is not None else (1, genesis(chain_id))
        self.expected = self.floor
        self.before_previous = self.previous
        self.previous_id: str | None = None
        self.pending: dict[int, VerifyRow] = {}
        self.previous_ok = True
        self.failed: list[_Failed] = []
        self.shift_reported = False
        self.wanted = wanted  # positions checkpoints name: their stored hashes are kept
        self.hashes: dict[int, tuple[bytes, uuid.UUID]] = {}
        self.head = 0

    def problem(self, kind: str, detail: str, event_id: uuid.UUID | None, seq: int | None) -> None:
        self.report.problems.append(VerifyProblem(kind, detail, event_id, self.workspace, seq))

    def offer(self, row: VerifyRow) -> None:
        """Take rows in any order: rows of one chain arrive nearly in order from a sequential
        scan (concurrent writers fill different pages), so a few wait here for their turn."""
        seq = row[ROW_SEQ]
        if seq is not None and seq < self.floor:
            return  # below the chain's signed cut: expired, and not yet deleted
        if seq == self.expected:
            self.add(row)
            pending = self.pending
            while pending and self.expected in pending:
                self.add(pending.pop(self.expected))
        elif seq is None or seq < self.expected or seq in self.pending:
            self.add(row)
        else:
            self.pending[seq] = row

    def drain(self) -> None:
        """At the end of the scan: what still waits comes after a gap."""
        for seq in sorted(self.pending):
            self.add(self.pending[seq])
        self.pending.clear()
        self.finish()

    def add(self, row: VerifyRow) -> None:
        seq, stored, data = row[ROW_SEQ], row[ROW_HASH], row[ROW_CANONICAL]
        if seq is None or stored is None or data is None:
            event_id = uuid.UUID(row[ROW_ID])
            self.problem(INSERTED, "the event is not part of any chain", event_id, None)
            return
        if seq in self.wanted:
            self.hashes[seq] = (stored, uuid.UUID(row[ROW_ID]))
        if seq > self.head:
            self.head = seq
        if seq == self.expected:
            ok = link(self.previous, seq, data) == stored
            if not ok:
                self._explain(uuid.UUID(row[ROW_ID]), seq, stored, data)
            # "The previous row was inserted" only explains a break after a row that itself
            # linked: a forger gives an inserted row a valid link, a swap leaves none.
            self.previous_ok = ok
            self.expected = seq + 1
            self.before_previous, self.previous = self.previous, stored
            self.previous_id = row[ROW_ID]
            return
        event_id = uuid.UUID(row[ROW_ID])
        if seq < self.expected:
            self.problem(INSERTED, f"a second event at position {seq}", event_id, seq)
            return
        first, last = self.expected, seq - 1
        where = f"position {first}" if first == last else f"positions {first}-{last}"
        after = f"after event {self.previous_id}" if self.previous_id else "at the start"
        self.problem(
            MISSING, f"the events at {where} are missing ({after}, before this event)",
            event_id, seq,
        )  # fmt: skip
        # Its own link cannot be checked without its predecessor: take it as the new start.
        self.previous_ok = False
        self.expected = seq + 1
        self.before_previous, self.previous = self.previous, stored
        self.previous_id = row[ROW_ID]

    def _explain(self, event_id: uuid.UUID, seq: int, stored: bytes, data: bytes) -> None:
        for shift in (1, -1):
            if link(self.previous, seq - shift, data) == stored:
                # Intact, but renumbered: events were inserted (or deleted) before it.
                if not self.shift_reported:
                    self.shift_reported = True
                    kind, what = (INSERTED, "inserted") if shift > 0 else (MISSING, "deleted")
                    self.problem(
                        kind, f"events from position {seq} on were renumbered by {shift:+d}:"
                        f" an event was {what} before this one", event_id, seq,
                    )  # fmt: skip
                return
        if self.previous_ok and seq > 1 and link(self.before_previous, seq - 1, data) == stored:
            self.problem(
                INSERTED,
                f"the event at position {seq - 1} was not in the chain: this one links past it",
                None if self.previous_id is None else uuid.UUID(self.previous_id),
                seq - 1,
            )
            return
        self.failed.append(
            _Failed(event_id, seq, stored, data, self.previous, self.before_previous)
        )

    def finish(self) -> None:
        failed = self.failed
        if not failed:
            return
        if len(failed) > _MAX_CLASSIFIED:
            for f in failed:
                detail = "the event's hash does not match its content"
                self.problem(MODIFIED, detail, f.event_id, f.seq)
            return
        candidates = {h for f in failed for h in (f.previous, f.before_previous, f.stored)}
        positions = {p for f in failed for p in (f.seq - 1, f.seq, f.seq + 1) if p > 0}
        reported: set[int] = set()
        verdicts: list[tuple[_Failed, int | None]] = []
        for f in failed:
            home = next(
                (p for p in positions for h in candidates if link(h, p, f.data) == f.stored),
                None,
            )
            verdicts.append((f, home))
        for f, home in verdicts:
            if home is not None and home != f.seq:
                reported.add(f.seq)
                detail = f"the event belongs at position {home}, not {f.seq}"
                self.problem(REORDERED, detail, f.event_id, f.seq)
        for f, home in verdicts:
            if home == f.seq:
                if f.seq - 1 in reported:
                    continue  # only its predecessor moved
                detail = "the previous event's hash was changed: this event no longer links to it"
            elif home is None:
                detail = "the event's stored content no longer matches its hash"
            else:
                continue
            reported.add(f.seq)
            self.problem(MODIFIED, detail, f.event_id, f.seq)


_UNSEEN: Any = object()


def walk_part(
    rows: Iterator[VerifyRow],
    postgres: bool,
    report: VerifyReport,
    wanted: dict[uuid.UUID, set[int]],
    workspace: uuid.UUID | None,
    tick: Callable[[int], None] | None = None,
    starts: Starts | None = None,
) -> ChainEnds:
    """Check every row's columns and walk every chain in ``rows``; problems go to ``report``
    (and ``report.events`` grows by the rows seen). ``tick(n)`` is called every 20,000 rows."""
    chains: dict[uuid.UUID, _ChainCheck] = {}
    done = 0
    by_text: dict[str, _ChainCheck | None] = {}
    check = check_pg_columns if postgres else check_columns
    # Millions of short-lived tuples would trigger the cycle collector over and over.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for row in rows:
            check(row, report)
            done += 1
            if tick is not None and done % 20_000 == 0:
                tick(20_000)
            chain_text = row[ROW_CHAIN]
            if chain_text is None:
                unchained(row, report)
                continue
            chain = by_text.get(chain_text, _UNSEEN)
            if chain is _UNSEEN:
                chain_id = uuid.UUID(chain_text)
                if workspace is not None and chain_id != workspace:
                    chain = None  # a row of another chain naming this workspace
                else:
                    chain = _ChainCheck(
                        chain_id, report, wanted.get(chain_id, set()), (starts or {}).get(chain_id)
                    )
                    chains[chain_id] = chain
                by_text[chain_text] = chain
            if chain is not None:
                chain.offer(row)
    finally:
        if gc_was_enabled:
            gc.enable()
    for chain in chains.values():
        chain.drain()
    if tick is not None:
        tick(done % 20_000)
    report.events += done
    return {chain_id: (chain.head, chain.hashes) for chain_id, chain in chains.items()}


def unchained(row: VerifyRow, report: VerifyReport) -> None:
    ws = None if row[ROW_WORKSPACE] is None else uuid.UUID(row[ROW_WORKSPACE])
    report.problems.append(
        VerifyProblem(INSERTED, "the event is not part of any chain", uuid.UUID(row[ROW_ID]), ws)
    )
