"""Reference apps auditing through auditledger's integrations (see README)."""
