"""Indexes for large ledgers: a customer's payments and payouts, newest first.

``GET /v1/payments?phone=`` (and the payouts list) filter by phone and order by id (newest
first, the cursor's order). With an index on ``phone`` alone, PostgreSQL fetches every row
of that phone and sorts them before returning the first page: a customer with 10,000
payments costs 10,000 row reads per page. On ``(phone, id)`` the page is read in order and
stops after ``limit`` rows, whatever the ledger's size (docs/scaling.md). The new index
replaces the old one (it serves every query the old one did).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("payments", "payouts")


def upgrade() -> None:
    """Replace ``ix_<table>_phone`` by ``ix_<table>_phone_id`` on payments and payouts."""
    for table in _TABLES:
        op.create_index(f"ix_{table}_phone_id", table, ["phone", "id"])
        op.drop_index(f"ix_{table}_phone", table_name=table)


def downgrade() -> None:
    """Back to the phone-only indexes."""
    for table in _TABLES:
        op.create_index(f"ix_{table}_phone", table, ["phone"])
        op.drop_index(f"ix_{table}_phone_id", table_name=table)
