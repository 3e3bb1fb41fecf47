"""``python -m pesa`` runs the ``pesa`` command."""

from pesa.cli import main

main()
