"""The read side: events as stored, and the verifier. Never imports _write or _sinks: the
verifier must not depend on the code it checks."""
