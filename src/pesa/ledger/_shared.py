"""State every process of one deployment shares through the ledger's database.

- :class:`DatabaseTokenStore`: the Daraja access token of each credential (a
  :class:`pesa.client.SharedTokenStore`), so N processes fetch one token per lifetime.
- :class:`DatabaseBucketState`: one global rate budget (a
  :class:`pesa._bucket.SharedBucketState`): every process's takes go through one row.

A budget's step locks its row (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite transactions
begin ``IMMEDIATE``, one writer at a time), runs :func:`pesa._bucket.gcra` — the same
arithmetic as every other bucket — and writes the row back, in one short transaction. On
PostgreSQL time is the database server's clock (``clock_timestamp()``), so processes on
machines whose clocks disagree still share one schedule.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pesa._bucket import Grant, gcra
from pesa.client._token import InMemoryTokenStore, StoredToken
from pesa.ledger._schema import rate_budgets, shared_tokens

__all__ = ["DatabaseBucketState", "DatabaseTokenStore"]


def _insert_ignore(engine: AsyncEngine, table: Any, **values: Any) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` in this engine's dialect."""
    if engine.dialect.name == "postgresql":
        return pg_insert(table).values(**values).on_conflict_do_nothing()
    if engine.dialect.name == "sqlite":
        return sqlite_insert(table).values(**values).on_conflict_do_nothing()
    return insert(table).values(**values)  # pragma: no cover - other dialects


class DatabaseTokenStore(InMemoryTokenStore):
    """Access tokens shared through the ``shared_tokens`` table.

    This process reads its own in-memory copy on every request (the
    :class:`pesa.client.InMemoryTokenStore` it extends) and the table only when that copy
    is missing, expired or refused. The table holds each token sealed with a key derived
    from the credential's consumer secret, so a reader of the database alone cannot use it.

    Args:
        engine: the ledger's engine.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__()
        self._engine = engine

    def __repr__(self) -> str:
        return f"DatabaseTokenStore({self._engine.dialect.name})"

    async def load(self, key: str) -> StoredToken | None:
        """The shared token of ``key``, or ``None``."""
        t = shared_tokens
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(t.c.sealed, t.c.fingerprint, t.c.expires_at).where(t.c.key == key)
                )
            ).first()
        if row is None or row.sealed is None or row.expires_at is None:
            return None
        return StoredToken(row.sealed, row.fingerprint or "", row.expires_at)

    async def claim(self, key: str, *, now: datetime, lease: float, refused: str | None) -> bool:
        """Take the fetch lease if it is free and the shared token is not usable."""
        t = shared_tokens
        unusable = or_(t.c.sealed.is_(None), t.c.expires_at <= now)
        if refused is not None:
            unusable = or_(unusable, t.c.fingerprint == refused)
        async with self._engine.begin() as conn:
            await conn.execute(_insert_ignore(self._engine, t, key=key, updated_at=now))
            result = await conn.execute(
                update(t)
                .where(
                    t.c.key == key,
                    or_(t.c.fetching_until.is_(None), t.c.fetching_until <= now),
                    unusable,
                )
                .values(fetching_until=now + timedelta(seconds=lease), updated_at=now)
            )
        return bool(result.rowcount)

    async def save(self, key: str, token: StoredToken) -> None:
        """Share ``token`` and give up the fetch lease."""
        t = shared_tokens
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            await conn.execute(_insert_ignore(self._engine, t, key=key, updated_at=now))
            await conn.execute(
                update(t)
                .where(t.c.key == key)
                .values(
                    sealed=token.sealed,
                    fingerprint=token.fingerprint,
                    expires_at=token.expires_at,
                    fetching_until=None,
                    updated_at=now,
                )
            )

    async def release(self, key: str) -> None:
        """Give up the fetch lease (the fetch failed): another process may try at once."""
        t = shared_tokens
        async with self._engine.begin() as conn:
            await conn.execute(
                update(t)
                .where(t.c.key == key)
                .values(fetching_until=None, updated_at=datetime.now(UTC))
            )


class DatabaseBucketState:
    """One global rate budget, a row of ``rate_budgets`` (see :mod:`pesa._bucket`).

    Args:
        engine: the ledger's engine.
        name: the budget (``reconcile-queries``, ``payouts``, ...).
    """

    def __init__(self, engine: AsyncEngine, name: str) -> None:
        self._engine = engine
        self.name = name
        self._postgres = engine.dialect.name == "postgresql"
        self._created = False
        self.steps = 0
        """Steps this process took (for metrics and tests)."""

    def __repr__(self) -> str:
        return f"DatabaseBucketState({self.name!r})"

    async def _now(self, conn: AsyncConnection) -> float:
        if self._postgres:
            value = await conn.scalar(select(func.extract("epoch", func.clock_timestamp())))
            return float(value or 0.0)
        return time.time()

    async def astep(
        self, *, interval: float, tolerance: float, pause: float, conditional: bool, take: bool
    ) -> tuple[Grant, float]:
        """Lock the budget's row, apply :func:`pesa._bucket.gcra`, write it back."""
        if self._postgres and self._created and take and not conditional and pause <= 0:
            fast = await self._take(interval, tolerance)
            if fast is not None:
                return fast
        return await self._step(
            interval=interval,
            tolerance=tolerance,
            pause=pause,
            conditional=conditional,
            take=take,
        )

    async def _take(self, interval: float, tolerance: float) -> tuple[Grant, float] | None:
        """A plain take on PostgreSQL in one statement (``UPDATE ... RETURNING``).

        The same step as :func:`pesa._bucket.gcra` with no pause and no condition, in SQL:
        ``tat = max(tat, now) + interval``, and the slot is ``old tat - tolerance``.
        ``tests/workers/test_shared_state.py`` checks both agree. ``None``: no row yet.
        """
        b = rate_budgets
        # statement_timestamp(): one value for the whole statement, SET and RETURNING alike.
        now_sql = func.extract("epoch", func.statement_timestamp())
        statement = (
            update(b)
            .where(b.c.name == self.name)
            .values(tat=func.greatest(b.c.tat, now_sql) + interval)
            .returning(b.c.tat, b.c.paused_until, now_sql.label("now"))
        )
        async with self._engine.begin() as conn:
            row = (await conn.execute(statement)).first()
        if row is None:
            return None
        now = float(row.now)
        old = float(row.tat) - interval  # max(old tat, now)
        wait = old - tolerance - now
        self.steps += 1
        grant = Grant(float(row.tat), float(row.paused_until), wait if wait > 1e-9 else 0.0, True)
        return grant, now

    async def _step(
        self, *, interval: float, tolerance: float, pause: float, conditional: bool, take: bool
    ) -> tuple[Grant, float]:
        b = rate_budgets
        query = select(b.c.tat, b.c.paused_until).where(b.c.name == self.name)
        if self._postgres:
            query = query.with_for_update()
        async with self._engine.begin() as conn:
            if not self._created:
                # Zero is long past: a new budget starts full.
                await conn.execute(
                    _insert_ignore(self._engine, b, name=self.name, tat=0.0, paused_until=0.0)
                )
                self._created = True
            row = (await conn.execute(query)).one()
            # Read after the row is locked: the time this step really happens.
            now = await self._now(conn)
            grant = gcra(
                float(row.tat),
                float(row.paused_until),
                now,
                interval=interval,
                tolerance=tolerance,
                pause=pause,
                conditional=conditional,
                take=take,
            )
            if grant.tat != row.tat or grant.paused_until != row.paused_until:
                await conn.execute(
                    update(b)
                    .where(b.c.name == self.name)
                    .values(tat=grant.tat, paused_until=grant.paused_until)
                )
        self.steps += 1
        return grant, now
