"""Accounts and receipts: the account of a payment, an outbox for every kind.

- ``payments.account``: the named Daraja account a payment was asked on (``NULL`` for
  payments made before accounts existed: the default account then).
- ``payment_events.subject_id``: the id of what an event is about (``pay_...``,
  ``rcp_...``, ...); ``payment_events.payment_id`` becomes optional, so that receipts and
  other kinds write their events to the same outbox (and the same webhooks).

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the account column and open the outbox to every kind."""
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("account", sa.String(32), nullable=True))
    op.create_index("ix_payments_account", "payments", ["account"])
    with op.batch_alter_table("payment_events") as batch:
        batch.add_column(sa.Column("subject_id", sa.String(40), nullable=True))
        batch.alter_column("payment_id", existing_type=sa.String(40), nullable=True)
    op.execute("UPDATE payment_events SET subject_id = payment_id")
    op.create_index("ix_payment_events_subject_id", "payment_events", ["subject_id"])


def downgrade() -> None:
    """Drop the account column and the subject ids (events of other kinds are deleted)."""
    op.drop_index("ix_payment_events_subject_id", table_name="payment_events")
    op.execute(
        "DELETE FROM webhook_deliveries WHERE event_id IN "
        "(SELECT id FROM payment_events WHERE payment_id IS NULL)"
    )
    op.execute("DELETE FROM payment_events WHERE payment_id IS NULL")
    with op.batch_alter_table("payment_events") as batch:
        batch.alter_column("payment_id", existing_type=sa.String(40), nullable=False)
        batch.drop_column("subject_id")
    op.drop_index("ix_payments_account", table_name="payments")
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("account")
