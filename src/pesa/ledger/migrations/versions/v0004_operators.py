"""The operator dashboard: operators, their sessions, the audit log; search indexes.

- ``operators``: who may sign in to ``/dashboard`` (a viewer reads, an operator acts), with
  a slow password hash (scrypt).
- ``operator_sessions``: server-side sessions, keyed by the SHA-256 of the cookie's token,
  each with its CSRF token; signing out deletes the row.
- ``audit_log``: every dashboard action (who, when, what, the note, the outcome) and every
  sign-in; failed sign-ins recorded here are what the sign-in throttle counts.
- indexes on ``payments.account_reference`` (search) and ``payments.flagged`` (the "needs
  attention" list).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from pesa.ledger._schema import UTCDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Spelled out (not imported from _schema): each migration is a frozen picture.
_Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the dashboard's three tables and the two search indexes."""
    op.create_table(
        "operators",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_operators"),
        sa.UniqueConstraint("name", name="uq_operators_name"),
    )
    op.create_table(
        "operator_sessions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("operator_id", sa.String(40), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("source_ip", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_operator_sessions"),
        sa.ForeignKeyConstraint(
            ["operator_id"],
            ["operators.id"],
            name="fk_operator_sessions_operator_id_operators",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_operator_sessions_operator_id", "operator_sessions", ["operator_id"])
    op.create_index("ix_operator_sessions_expires_at", "operator_sessions", ["expires_at"])
    op.create_table(
        "audit_log",
        sa.Column("seq", _Seq, nullable=False, autoincrement=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("operator_id", sa.String(40), nullable=True),
        sa.Column("operator_name", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(64), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("source_ip", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_target", "audit_log", ["target"])
    op.create_index("ix_audit_log_action_at", "audit_log", ["action", "at"])
    op.create_index("ix_payments_account_reference", "payments", ["account_reference"])
    op.create_index("ix_payments_flagged", "payments", ["flagged"])


def downgrade() -> None:
    """Drop the dashboard's tables and the search indexes."""
    op.drop_index("ix_payments_flagged", table_name="payments")
    op.drop_index("ix_payments_account_reference", table_name="payments")
    op.drop_index("ix_audit_log_action_at", table_name="audit_log")
    op.drop_index("ix_audit_log_target", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index("ix_operator_sessions_expires_at", table_name="operator_sessions")
    op.drop_index("ix_operator_sessions_operator_id", table_name="operator_sessions")
    op.drop_table("operator_sessions")
    op.drop_table("operators")
