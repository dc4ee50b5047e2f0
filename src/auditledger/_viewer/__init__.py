"""The audit-trail viewer: a page and a pull API over ``AuditReader``, mountable in any ASGI app.

Layered on the read side: it reads through ``AuditReader``, records each look through an
``AuditLogger`` (never blocking the request on that write), and verifies chains only in a
background thread. The web parts need the ``web`` extra (Starlette) and are imported from
``auditledger.web``; this package's own import stays free of them, so the command line loads
without the extra.
"""
