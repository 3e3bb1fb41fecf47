"""State shared by every process of one deployment: the access token and the rate budgets.

- ``shared_tokens``: the Daraja access token of each credential (sealed with a key derived
  from its consumer secret) and the lease of the one process fetching a new one, so that
  N ``pesa serve`` / ``pesa worker`` processes fetch one token per token lifetime.
- ``rate_budgets``: one row per global rate budget (the reconciler's query rate, the payout
  pace): the GCRA state every process spends together.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from pesa.ledger._schema import UTCDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``shared_tokens`` and ``rate_budgets``."""
    op.create_table(
        "shared_tokens",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("fetching_until", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "rate_budgets",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("tat", sa.Double(), nullable=False),
        sa.Column("paused_until", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    """Drop both tables (each process falls back to its own token and budgets)."""
    op.drop_table("rate_budgets")
    op.drop_table("shared_tokens")
