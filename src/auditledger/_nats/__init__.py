"""Scale-out through NATS JetStream: publishers, the stream, ingesters.

Applications publish prepared events to a JetStream stream (``publisher``); ``auditledger
ingest`` processes store them in PostgreSQL (``ingester``), one owner per partition
(``ownership``). Only ``publisher``, ``stream`` and ``ingester`` import nats-py (the ``nats``
extra); ``partitions`` and ``wire`` do not.
"""
