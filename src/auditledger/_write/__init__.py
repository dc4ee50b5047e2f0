"""The write path: capture on the caller's thread, then the writer thread's loop, storing,
spool and replay."""
