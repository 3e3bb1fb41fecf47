"""When a payout's or refund's first request was sent: ``first_sent_at``.

``PESA_PAYOUT_DEADLINE`` counted from a transfer's creation, so the tail of a large batch,
sent long after it was committed (the payout pace), was flagged "no final answer before the
deadline" although Daraja had only just been asked. The deadline now counts from the first
send: ``payouts.first_sent_at`` and ``refunds.first_sent_at`` are set in the transaction
that counts the first attempt (``attempts`` 0 -> 1) and never moved by later attempts.

Existing rows: when their first send was is not recorded anywhere. Those with
``attempts > 0`` get ``first_sent_at = created_at``, the earliest it can have been: their
deadline stays exactly what it was before this migration (never later, so nothing that was
due to be flagged escapes the flag). Rows never sent keep ``NULL`` and get the time of their
first send when it is counted.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from pesa.ledger._schema import UTCDateTime

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("payouts", "refunds")


def upgrade() -> None:
    """Add ``first_sent_at`` to payouts and refunds; sent rows count from their creation."""
    for name in _TABLES:
        with op.batch_alter_table(name) as batch:
            batch.add_column(sa.Column("first_sent_at", UTCDateTime(), nullable=True))
        table = sa.table(
            name,
            sa.column("first_sent_at"),
            sa.column("created_at"),
            sa.column("attempts", sa.Integer()),
        )
        op.execute(
            table.update().where(table.c.attempts > 0).values(first_sent_at=table.c.created_at)
        )


def downgrade() -> None:
    """Drop ``first_sent_at`` (the deadline then counts from creation again)."""
    for name in reversed(_TABLES):
        with op.batch_alter_table(name) as batch:
            batch.drop_column("first_sent_at")
