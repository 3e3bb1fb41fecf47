"""payment_events.txid: the writing transaction's id, so the event feed never skips events.

On PostgreSQL, ``seq`` values are handed out when events are inserted, not when their
transactions commit: a reader could see seq 6 committed while seq 5 is still in flight and
move its cursor past 5 for good. Each event now records its transaction id
(``pg_current_xact_id()``); the feed orders by ``(txid, seq)`` and shows only events of
transactions older than every transaction still running, so anything that commits later
sorts after any cursor already handed out. SQLite serialises writers, so ``txid`` is 0.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``txid`` (defaulting to the current transaction on PostgreSQL) and its index."""
    if op.get_bind().dialect.name == "postgresql":
        default = sa.text("(pg_current_xact_id()::text::bigint)")
    else:
        default = sa.text("0")
    with op.batch_alter_table("payment_events") as batch:
        batch.add_column(sa.Column("txid", sa.BigInteger(), nullable=False, server_default=default))
    op.create_index("ix_payment_events_txid_seq", "payment_events", ["txid", "seq"])


def downgrade() -> None:
    """Drop ``txid`` (the feed falls back to ``seq`` order)."""
    op.drop_index("ix_payment_events_txid_seq", table_name="payment_events")
    with op.batch_alter_table("payment_events") as batch:
        batch.drop_column("txid")
