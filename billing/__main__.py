"""``python -m billing`` runs the ``billing`` command."""

from billing.cli import main

main()
