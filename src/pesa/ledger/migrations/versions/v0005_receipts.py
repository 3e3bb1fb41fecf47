"""Accounts and receipts: the account of a payment, an outbox for every kind, C2B receipts.

- ``payments.account``: the named Daraja account a payment was asked on (``NULL`` for
  payments made before accounts existed: the default account then).
- ``payment_events.subject_id``: the id of what an event is about (``pay_...``,
  ``rcp_...``, ...); ``payment_events.payment_id`` becomes optional, so that receipts and
  other kinds write their events to the same outbox (and the same webhooks).
- ``callbacks.subject_id``: what a raw callback of another kind is about (a receipt).
- ``receipts``: C2B payments keyed by their M-Pesa receipt (``TransID``), with how far they
  are verified; ``expected_payments``: what a merchant expects for an account number;
  ``receipt_queries``: every Transaction Status query about a receipt, and its answer.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from pesa.ledger._schema import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out here, as in 0001: each migration is a frozen picture.
_Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


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
    with op.batch_alter_table("callbacks") as batch:
        batch.add_column(sa.Column("subject_id", sa.String(40), nullable=True))
    op.create_index("ix_callbacks_subject_id", "callbacks", ["subject_id"])
    _create_receipts()
    _create_expected_payments()
    _create_receipt_queries()


def _create_receipts() -> None:
    op.create_table(
        "receipts",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("trans_id", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("account", sa.String(32), nullable=True),
        sa.Column("shortcode", sa.String(16), nullable=False),
        sa.Column("amount", sa.Numeric(14, 2), nullable=False),
        sa.Column("account_reference", sa.String(64), nullable=True),
        sa.Column("reference_key", sa.String(64), nullable=True),
        sa.Column("transaction_type", sa.String(32), nullable=True),
        sa.Column("invoice_number", sa.String(64), nullable=True),
        sa.Column("third_party_trans_id", sa.String(64), nullable=True),
        sa.Column("msisdn", sa.String(80), nullable=True),
        sa.Column("phone", sa.String(16), nullable=True),
        sa.Column("phone_hash", sa.String(64), nullable=True),
        sa.Column("msisdn_prefix", sa.String(16), nullable=True),
        sa.Column("msisdn_suffix", sa.String(16), nullable=True),
        sa.Column("payer_name", sa.String(255), nullable=True),
        sa.Column("trans_time", UTCDateTime(), nullable=True),
        sa.Column("org_account_balance", sa.Numeric(16, 2), nullable=True),
        sa.Column("expected_payment_id", sa.String(40), nullable=True),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("flag_reason", sa.Text(), nullable=True),
        sa.Column("verify_at", UTCDateTime(), nullable=True),
        sa.Column("verify_since", UTCDateTime(), nullable=True),
        sa.Column("claimed_until", UTCDateTime(), nullable=True),
        sa.Column("check_count", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_receipts"),
        sa.UniqueConstraint("trans_id", name="uq_receipts_trans_id"),
    )
    for name, columns in (
        ("ix_receipts_account_reference_key", ["account", "reference_key"]),
        ("ix_receipts_status", ["status"]),
        ("ix_receipts_verify_at", ["verify_at"]),
        ("ix_receipts_phone_hash", ["phone_hash"]),
        ("ix_receipts_phone", ["phone"]),
        ("ix_receipts_trans_time", ["trans_time"]),
        ("ix_receipts_expected_payment_id", ["expected_payment_id"]),
    ):
        op.create_index(name, "receipts", columns)


def _create_expected_payments() -> None:
    op.create_table(
        "expected_payments",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("account", sa.String(32), nullable=False),
        sa.Column("account_reference", sa.String(64), nullable=False),
        sa.Column("reference_key", sa.String(64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("description", sa.String(255), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("paid_amount", sa.Numeric(14, 2), nullable=False),
        sa.Column("pending_amount", sa.Numeric(14, 2), nullable=False),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("flag_reason", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_expected_payments"),
        sa.UniqueConstraint("idempotency_key", name="uq_expected_payments_idempotency_key"),
    )
    op.create_index(
        "ix_expected_payments_account_reference_key",
        "expected_payments",
        ["account", "reference_key"],
    )
    op.create_index("ix_expected_payments_status", "expected_payments", ["status"])


def _create_receipt_queries() -> None:
    op.create_table(
        "receipt_queries",
        sa.Column("seq", _Seq, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("nonce_hash", sa.String(64), nullable=False),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("trans_id", sa.String(32), nullable=False),
        sa.Column("account", sa.String(32), nullable=False),
        sa.Column("shortcode", sa.String(16), nullable=False),
        sa.Column("receipt_id", sa.String(40), nullable=True),
        sa.Column("account_reference", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("conversation_id", sa.String(128), nullable=True),
        sa.Column("originator_conversation_id", sa.String(128), nullable=True),
        sa.Column("result_code", sa.String(32), nullable=True),
        sa.Column("result_desc", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("asked_at", UTCDateTime(), nullable=False),
        sa.Column("answered_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_receipt_queries"),
        sa.UniqueConstraint("id", name="uq_receipt_queries_id"),
        sa.UniqueConstraint("nonce_hash", name="uq_receipt_queries_nonce_hash"),
    )
    op.create_index("ix_receipt_queries_trans_id", "receipt_queries", ["trans_id"])
    op.create_index("ix_receipt_queries_receipt_id", "receipt_queries", ["receipt_id"])


def downgrade() -> None:
    """Drop the receipts, the account column and the subject ids (events of other kinds
    are deleted)."""
    op.drop_table("receipt_queries")
    op.drop_table("expected_payments")
    op.drop_table("receipts")
    op.drop_index("ix_callbacks_subject_id", table_name="callbacks")
    with op.batch_alter_table("callbacks") as batch:
        batch.drop_column("subject_id")
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
