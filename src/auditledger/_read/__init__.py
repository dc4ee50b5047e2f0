"""The read side: events as stored, queries, pages, exports, bundles and the verifier.

Never imports _write or _sinks: what reads and verifies the log must not depend on the code
that writes it.
"""
