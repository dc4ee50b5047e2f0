"""Tamper evidence: the canonical form (defined once), the links of each chain, checkpoints."""
