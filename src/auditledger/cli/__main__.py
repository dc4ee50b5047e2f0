"""``python -m auditledger.cli``: the same commands as the ``auditledger`` script."""

from . import main

main()
