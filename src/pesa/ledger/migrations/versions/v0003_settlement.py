"""Settlement: where a CheckoutRequestID came from, unverified evidence, the STK query log.

- ``payments.checkout_request_id_verified``: ``false`` while the id was learnt from a
  callback (a lost push answer) rather than from Daraja's push answer or a query by that id;
  such an id is never the basis of ``succeeded`` until an STK query confirms it.
- ``payments.evidence_callback_id``: the stored callback that reported a success the ledger
  could not cross-check (no amount, a masked phone, an unverified id, a failed payment): the
  evidence an STK query settles, linked from the payment.
- ``payments.verify_at`` / ``payments.verify_since``: a query is wanted at ``verify_at``
  whatever the payment's status (a failed payment whose success callback arrived late);
  ``verify_since`` is when that question was first asked, so that it is not asked forever.
- ``stk_queries``: every STK query the reconciler sent and what Daraja answered.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from pesa.ledger._schema import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here, as in 0001: each migration is a frozen picture.
_Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Add the settlement columns and the STK query log."""
    with op.batch_alter_table("payments") as batch:
        batch.add_column(
            sa.Column(
                "checkout_request_id_verified",
                sa.Boolean(),
                nullable=False,
                server_default=sa.true(),
            )
        )
        batch.add_column(sa.Column("evidence_callback_id", sa.String(40), nullable=True))
        batch.add_column(sa.Column("verify_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("verify_since", UTCDateTime(), nullable=True))
    op.create_index("ix_payments_verify_at", "payments", ["verify_at"])
    op.create_index("ix_callbacks_payment_id", "callbacks", ["payment_id"])
    op.create_table(
        "stk_queries",
        sa.Column("seq", _Seq, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("payment_id", sa.String(40), nullable=False),
        sa.Column("checkout_request_id", sa.String(128), nullable=False),
        sa.Column("asked_at", UTCDateTime(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("result_code", sa.String(32), nullable=True),
        sa.Column("result_desc", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_stk_queries"),
        sa.UniqueConstraint("id", name="uq_stk_queries_id"),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name="fk_stk_queries_payment_id_payments"
        ),
    )
    op.create_index("ix_stk_queries_payment_id", "stk_queries", ["payment_id"])


def downgrade() -> None:
    """Drop the query log and the settlement columns."""
    op.drop_index("ix_stk_queries_payment_id", table_name="stk_queries")
    op.drop_table("stk_queries")
    op.drop_index("ix_callbacks_payment_id", table_name="callbacks")
    op.drop_index("ix_payments_verify_at", table_name="payments")
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("verify_since")
        batch.drop_column("verify_at")
        batch.drop_column("evidence_callback_id")
        batch.drop_column("checkout_request_id_verified")
