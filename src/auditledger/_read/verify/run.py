"""``auditledger verify``: recompute every chain, check every checkpoint, report each problem.

The verifier trusts nothing it reads: each event's link is recomputed from the stored canonical
bytes, each event's columns are compared with what was hashed, and each checkpoint's signature
is checked with public keys given by the caller. Checkpoints held outside the database (the file
written by ``auditledger checkpoint --out``) are what reveal deleted newest events.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence

from ..._chain.checkpoints import Checkpoint, load_public_keys, read_checkpoint_file
from ..._errors import AuditLedgerError, VerifyError, describe_database_error
from .checkpoints import check_heads, check_signatures
from .cuts import chain_facts, chain_starts
from .erasures import check_coverage, database_coverers
from .parallel import walk_log
from .report import VerifyReport
from .source import Source

# ---- the verifier --------------------------------------------------------------------------


def verify_log(
    database_url: str | None = None,
    *,
    public_keys: Sequence[str | os.PathLike[str]] = (),
    checkpoints_file: str | os.PathLike[str] | None = None,
    workspace_id: uuid.UUID | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
) -> VerifyReport:
    """Check the whole log (or one workspace's chain) and return every problem found.

    ``public_keys``: PEM files of the keys checkpoints may be signed with (several when keys
    were rotated). ``checkpoints_file``: the copy written by ``auditledger checkpoint --out``.
    ``progress(done, total)`` is called after each block of events (``total`` is an estimate).
    ``workers``: processes sharing the chains of a PostgreSQL log (the checks are CPU-bound
    Python; one chain is never split, and SQLite or one workspace always takes one).
    Raises ``VerifyError`` when it cannot run at all.
    """

    report = VerifyReport()
    workspace = _workspace(workspace_id)
    try:
        keys = load_public_keys(public_keys)
        external: list[Checkpoint] = []
        if checkpoints_file is not None:
            external = read_checkpoint_file(checkpoints_file)
    except (AuditLedgerError, OSError, ValueError) as exc:
        raise VerifyError(str(exc)) from exc
    try:
        source = Source(database_url)
        stored = source.checkpoints()
        total = source.count() if progress else 0
    except AuditLedgerError as exc:
        raise VerifyError(str(exc)) from exc
    except Exception as exc:
        raise VerifyError(describe_database_error(exc)) from exc

    good = check_signatures(stored, external, keys, report, checkpoints_file)
    try:
        cuts = source.cuts()
        fetch = source.pg_fetch if source.postgres else None
        facts = chain_facts(source.url_text(), cuts, workspace, fetch)
        starts = chain_starts(cuts, keys, report, facts)
    except Exception as exc:
        raise VerifyError(describe_database_error(exc)) from exc
    wanted: dict[uuid.UUID, set[int]] = {}
    for _, checkpoint in good:
        for chain_id, seq, _digest in checkpoint.heads:
            wanted.setdefault(chain_id, set()).add(seq)

    try:
        ends = walk_log(
            source, wanted, workspace, report, progress, total, workers=workers, starts=starts
        )
    except VerifyError:
        raise
    except Exception as exc:
        raise VerifyError(f"cannot read the events ({type(exc).__name__})") from exc
    report.chains = len(ends)
    check_heads(good, ends, workspace, report)
    if report.erased_events:
        try:
            fetch = source.pg_fetch if source.postgres else None
            coverers = database_coverers(source.url_text(), source.postgres, fetch)
        except Exception as exc:
            raise VerifyError(describe_database_error(exc)) from exc
        report.erased -= check_coverage(report.problems, report.erased_events, coverers)
    if not stored and not external:
        report.notes.append(
            "no checkpoints: deleting the newest events, or rewriting a whole chain, would not"
            " be detected"
        )
    elif not external:
        report.notes.append(
            "no external checkpoint file: newest events deleted together with the stored"
            " checkpoints would not be detected"
        )
    return report


def _workspace(value: uuid.UUID | str | None) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        raise VerifyError("the workspace id is not a UUID") from exc
