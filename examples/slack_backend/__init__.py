"""Reference Slack backend: a Bolt AsyncApp audited through auditledger.slack."""
