"""The only code that changes stored events: GDPR erasure (and, next to it, retention).

The database triggers (migration 0004) let these changes through and nothing else.
"""
