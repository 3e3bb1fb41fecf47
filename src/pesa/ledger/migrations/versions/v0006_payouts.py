"""Payouts, refunds, Transaction Status queries and balance reads.

- ``payouts``: B2C payouts (one row per payout, committed before its request leaves; the
  OriginatorConversationID is the payout's id, so a re-send is a duplicate to Daraja).
- ``refunds``: reversals of a payment's (or receipt's) M-Pesa receipt.
- ``status_queries``: every Transaction Status query sent for a payout or refund; its
  ``Result`` is matched by the ConversationID Daraja gave the query.
- ``balance_queries``: Account Balance requests and the balances their results reported.

Their events go to the one outbox (``payment_events.subject_id``, migration 0005) and their
raw Results to ``callbacks`` (``subject_id``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from pesa.ledger._schema import UTCDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here, as in 0001: each migration is a frozen picture.
_Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _transfer_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("originator_conversation_id", sa.String(128), nullable=True),
        sa.Column("conversation_id", sa.String(128), nullable=True),
        sa.Column("ids_verified", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("result_code", sa.String(32), nullable=True),
        sa.Column("result_desc", sa.Text(), nullable=True),
        sa.Column("receipt", sa.String(64), nullable=True),
        sa.Column("paid_amount", sa.Numeric(14, 2), nullable=True),
        sa.Column("counterparty", sa.String(255), nullable=True),
        sa.Column("completed_at", UTCDateTime(), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("flag_reason", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("send_at", UTCDateTime(), nullable=True),
        sa.Column("next_check_at", UTCDateTime(), nullable=True),
        sa.Column("claimed_until", UTCDateTime(), nullable=True),
        sa.Column("check_count", sa.Integer(), nullable=False),
        sa.Column("evidence_callback_id", sa.String(40), nullable=True),
        sa.Column("verify_at", UTCDateTime(), nullable=True),
        sa.Column("verify_since", UTCDateTime(), nullable=True),
        sa.Column("expired_at", UTCDateTime(), nullable=True),
    ]


def _transfer_constraints(table: str) -> list[sa.Constraint]:
    return [
        sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
        sa.UniqueConstraint("idempotency_key", name=f"uq_{table}_idempotency_key"),
        sa.UniqueConstraint(
            "originator_conversation_id", name=f"uq_{table}_originator_conversation_id"
        ),
        sa.UniqueConstraint("conversation_id", name=f"uq_{table}_conversation_id"),
    ]


def upgrade() -> None:
    """Create the payout, refund, status and balance tables; events name any subject."""
    op.create_table(
        "payouts",
        *_transfer_columns(),
        sa.Column("phone", sa.String(16), nullable=False),
        sa.Column("command_id", sa.String(32), nullable=False),
        sa.Column("remarks", sa.String(100), nullable=False),
        sa.Column("occasion", sa.String(100), nullable=True),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("shortcode", sa.String(16), nullable=False),
        sa.Column("batch_id", sa.String(128), nullable=True),
        sa.Column("batch_row", sa.Integer(), nullable=True),
        *_transfer_constraints("payouts"),
    )
    op.create_index("ix_payouts_receipt", "payouts", ["receipt"])
    op.create_index("ix_payouts_status_next_check_at", "payouts", ["status", "next_check_at"])
    op.create_index("ix_payouts_send_at", "payouts", ["send_at"])
    op.create_index("ix_payouts_verify_at", "payouts", ["verify_at"])
    op.create_index("ix_payouts_batch_id_batch_row", "payouts", ["batch_id", "batch_row"])
    op.create_index("ix_payouts_phone", "payouts", ["phone"])
    op.create_table(
        "refunds",
        *_transfer_columns(),
        sa.Column("source_id", sa.String(40), nullable=False),
        sa.Column("original_receipt", sa.String(64), nullable=False),
        sa.Column("receiver_party", sa.String(16), nullable=False),
        sa.Column("phone", sa.String(16), nullable=True),
        sa.Column("remarks", sa.String(100), nullable=False),
        *_transfer_constraints("refunds"),
    )
    op.create_index("ix_refunds_receipt", "refunds", ["receipt"])
    op.create_index("ix_refunds_source_id", "refunds", ["source_id"])
    op.create_index("ix_refunds_status_next_check_at", "refunds", ["status", "next_check_at"])
    op.create_index("ix_refunds_verify_at", "refunds", ["verify_at"])
    op.create_index("ix_refunds_original_receipt", "refunds", ["original_receipt"])
    op.create_table(
        "status_queries",
        sa.Column("seq", _Seq, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("subject_id", sa.String(40), nullable=False),
        sa.Column("by_originator_id", sa.String(128), nullable=True),
        sa.Column("by_receipt", sa.String(64), nullable=True),
        sa.Column("conversation_id", sa.String(128), nullable=True),
        sa.Column("originator_conversation_id", sa.String(128), nullable=True),
        sa.Column("asked_at", UTCDateTime(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("result_code", sa.String(32), nullable=True),
        sa.Column("result_desc", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("answered_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_status_queries"),
        sa.UniqueConstraint("id", name="uq_status_queries_id"),
        sa.UniqueConstraint("conversation_id", name="uq_status_queries_conversation_id"),
    )
    op.create_index("ix_status_queries_subject_id", "status_queries", ["subject_id"])
    op.create_table(
        "balance_queries",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("shortcode", sa.String(16), nullable=False),
        sa.Column("conversation_id", sa.String(128), nullable=True),
        sa.Column("originator_conversation_id", sa.String(128), nullable=True),
        sa.Column("asked_at", UTCDateTime(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("result_code", sa.String(32), nullable=True),
        sa.Column("result_desc", sa.Text(), nullable=True),
        sa.Column("accounts", sa.JSON(), nullable=True),
        sa.Column("read_at", UTCDateTime(), nullable=True),
        sa.Column("answered_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_balance_queries"),
        sa.UniqueConstraint("conversation_id", name="uq_balance_queries_conversation_id"),
    )
    op.create_index(
        "ix_balance_queries_account_asked_at", "balance_queries", ["account", "asked_at"]
    )


def downgrade() -> None:
    """Drop the tables (their events stay in the outbox, naming subjects now gone)."""
    op.drop_index("ix_balance_queries_account_asked_at", table_name="balance_queries")
    op.drop_table("balance_queries")
    op.drop_index("ix_status_queries_subject_id", table_name="status_queries")
    op.drop_table("status_queries")
    for name in ("original_receipt", "verify_at", "status_next_check_at", "source_id", "receipt"):
        op.drop_index(f"ix_refunds_{name}", table_name="refunds")
    op.drop_table("refunds")
    for name in ("phone", "batch_id_batch_row", "verify_at", "send_at", "status_next_check_at"):
        op.drop_index(f"ix_payouts_{name}", table_name="payouts")
    op.drop_index("ix_payouts_receipt", table_name="payouts")
    op.drop_table("payouts")
