"""The ``pesa`` command line: ``pesa --help`` lists every subcommand."""

from pesa.cli import (
    _c2b,  # noqa: F401  (registers `pesa c2b`)
    _client,  # noqa: F401  (registers `pesa token`, `pesa stk`, `pesa qr`)
    _emulator,  # noqa: F401  (registers `pesa emulator`)
    _gateway,  # noqa: F401  (registers `pesa serve|worker|db|demo`)
    _operators,  # noqa: F401  (registers `pesa operator`)
    _payments,  # noqa: F401  (registers `pesa payments|events|listen|trigger`)
    _payouts,  # noqa: F401  (registers `pesa payouts send`)
)
from pesa.cli._app import app
from pesa.cli._main import main

__all__ = ["app", "main"]
