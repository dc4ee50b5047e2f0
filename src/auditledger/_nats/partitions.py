"""Which partition, subject and consumer an event belongs to.

The partition is computed in the client (nats-server 2.9 has no partitioning transform) with a
stable hash of the workspace, so a workspace's events always share a partition and keep their
order through one ingester. The partition count is part of the subject
(``audit.v1.<count>.<partition>``): a publisher learns it from the stream's subjects, and after
a change of count a publisher still using the old one is refused (and spools) instead of
publishing where no consumer listens.
"""

from __future__ import annotations

import re
import uuid
import zlib

from .._events import WorkspaceRef

STREAM = "AUDIT"
SUBJECT_PREFIX = "audit.v1"
DEFAULT_PARTITIONS = 32
MAX_PARTITIONS = 1024

_SUBJECTS = re.compile(r"^audit\.v1\.(\d+)\.\*$")


def stream_subject(count: int) -> str:
    return f"{SUBJECT_PREFIX}.{count}.*"


def subject(count: int, partition: int) -> str:
    return f"{SUBJECT_PREFIX}.{count}.{partition}"


def consumer_name(partition: int) -> str:
    return f"ingest-p{partition}"


def count_from_subjects(subjects: list[str] | None) -> int | None:
    """The partition count a stream's subjects encode, or None when they are not ours."""
    for s in subjects or []:
        match = _SUBJECTS.match(s)
        if match:
            return int(match.group(1))
    return None


def workspace_key(workspace: object) -> str:
    """What the hash is taken of: the id, or the Slack key of a ref (unresolved here).

    An event naming its workspace by ``workspaces.id`` and another naming the same workspace by
    a ``WorkspaceRef`` may land in different partitions: the chain stays whole (its head is
    locked in the database), only their relative order is not kept.
    """
    if isinstance(workspace, WorkspaceRef):
        return "ref:" + (workspace.key or "")
    if isinstance(workspace, uuid.UUID):
        return str(workspace)
    return ""


def partition_of(workspace: object, count: int) -> int:
    # CRC-32: stable across processes and versions (Python's hash() is salted per process).
    return zlib.crc32(workspace_key(workspace).encode()) % count
