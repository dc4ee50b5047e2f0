"""Prometheus metrics for an AuditLogger (extra ``metrics``).

    from prometheus_client import REGISTRY
    from auditledger.metrics import AuditLedgerCollector

    REGISTRY.register(AuditLedgerCollector(audit))

Values are read from ``AuditLogger.stats()`` at scrape time; nothing runs on the log path.
"""

from __future__ import annotations

from collections.abc import Iterator

from ._api.logger import AuditLogger
from ._errors import MissingExtraError

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtraError("metrics", "prometheus_client") from exc

__all__ = ["AuditLedgerCollector"]


class AuditLedgerCollector(Collector):
    def __init__(self, logger: AuditLogger, *, namespace: str = "auditledger") -> None:
        self._logger = logger
        self._ns = namespace

    def collect(self) -> Iterator[Metric]:
        s = self._logger.stats()
        ns = self._ns
        for name, value, doc in (
            ("events_enqueued", s.enqueued, "Events logged through this process."),
            ("events_written", s.written, "Events stored in the database."),
            ("events_spooled", s.spooled, "Events that went to the local spool."),
            ("events_replayed", s.replayed, "Events replayed from the spool."),
            ("events_quarantined", s.quarantined, "Calls kept in audit_quarantine."),
        ):
            yield CounterMetricFamily(f"{ns}_{name}", doc, value=value)
        dropped = CounterMetricFamily(
            f"{ns}_events_dropped", "Events that could not be kept.", labels=["reason"]
        )
        for reason, count in sorted(s.dropped.items()):
            dropped.add_metric([reason], count)
        yield dropped
        yield GaugeMetricFamily(
            f"{ns}_queue_depth", "Events waiting in memory.", value=s.queue_depth
        )
        yield GaugeMetricFamily(
            f"{ns}_spool_bytes", "Bytes in the spool folder.", value=s.spool_bytes
        )
        yield GaugeMetricFamily(
            f"{ns}_database_healthy", "1 when the last write succeeded.", value=int(s.healthy)
        )
        if s.flush_latency_seconds is not None:
            yield GaugeMetricFamily(
                f"{ns}_batch_write_seconds",
                "Time the last batch took to store.",
                value=s.flush_latency_seconds,
            )
