"""The read side: filters, pages, exports and bundles over the one row layout of audit_logs.

Nothing here imports the write path or the sinks: what reads and verifies the log must not
depend on the code that writes it.
"""
