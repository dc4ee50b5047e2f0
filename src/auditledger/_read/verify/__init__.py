"""``auditledger verify``: source (reading) -> columns -> chains -> checkpoints, run by run."""
