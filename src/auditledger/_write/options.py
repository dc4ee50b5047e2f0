"""The writer's settings, as ``AuditLogger`` passes them on (documented there)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class WriterOptions:
    queue_size: int = 10_000
    batch_size: int = 2_000
    flush_interval: float = 0.2
    write_timeout: float = 10.0
    write_ahead: bool = False
    spool_max_bytes: int = 1024**3
    replay_interval: float = 30.0
