"""Reference web portal: FastAPI audited through auditledger.web."""
