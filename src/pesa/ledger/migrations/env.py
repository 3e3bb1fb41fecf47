"""Alembic environment for the ledger: runs on the connection the ledger hands it.

Use ``pesa db upgrade`` or :meth:`pesa.ledger.Ledger.migrate`; both pass an open connection
through ``config.attributes["connection"]``, so no ``alembic.ini`` or URL is needed here.
"""

from __future__ import annotations

from alembic import context

from pesa._exceptions import ConfigurationError
from pesa.ledger._schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise ConfigurationError(
        "run the ledger migrations through `pesa db upgrade` or Ledger.migrate(), "
        "which provide the database connection"
    )

context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things: later migrations use batch mode there.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
