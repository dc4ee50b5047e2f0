"""The API layer: AuditLogger, its helpers, the default logger, and `auditledger status`."""
