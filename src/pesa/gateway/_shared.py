"""What the processes of one deployment share: the access token and the rate budgets.

Several ``pesa serve`` and ``pesa worker`` processes, on several machines, share one
ledger. With ``PESA_SHARED_STATE`` set to ``database`` (the default on PostgreSQL) or
``redis``, they also share

- the Daraja access token of each credential: N processes fetch one token per lifetime;
- the rate budgets: ``PESA_RECONCILE_QUERY_RATE`` (STK and Transaction Status queries),
  the receipt verifier's queries and ``PESA_PAYOUT_RATE`` hold across all of them.
"""

from __future__ import annotations

from typing import Literal

from pesa._bucket import SharedBucketState
from pesa._exceptions import ConfigurationError
from pesa._logging import get_logger
from pesa.client import TokenStore
from pesa.config import Settings
from pesa.ledger import Ledger

__all__ = ["BUDGETS", "SharedState", "shared_state"]

log = get_logger("pesa.gateway")

# The global budgets, by name (one row of rate_budgets, one Redis key each).
BUDGETS = ("queries", "receipt-queries", "payouts")

Kind = Literal["database", "redis", "process"]


class SharedState:
    """The token store and the rate-budget states of one process (``None``: its own).

    Args:
        kind: ``database``, ``redis`` or ``process``.
        tokens: the shared token store (``None`` for ``process``).
        budgets: budget name → its shared state.
    """

    def __init__(
        self,
        kind: Kind,
        tokens: TokenStore | None = None,
        budgets: dict[str, SharedBucketState] | None = None,
    ) -> None:
        self.kind = kind
        self.tokens = tokens
        self._budgets = dict(budgets or {})

    def __repr__(self) -> str:
        return f"SharedState({self.kind!r})"

    def budget(self, name: str) -> SharedBucketState | None:
        """The shared state of budget ``name`` (``None``: this process keeps its own)."""
        return self._budgets.get(name)


def _kind(settings: Settings, ledger: Ledger) -> Kind:
    if settings.shared_state == "auto":
        return "database" if ledger.engine.dialect.name == "postgresql" else "process"
    return settings.shared_state


def shared_state(settings: Settings, ledger: Ledger) -> SharedState:
    """The shared state ``PESA_SHARED_STATE`` asks for.

    Raises:
        ConfigurationError: ``redis`` without the ``redis`` package installed.
    """
    kind = _kind(settings, ledger)
    if kind == "process":
        return SharedState("process")
    if kind == "redis":
        try:
            from pesa.gateway._redis import RedisBucketState, RedisTokenStore, redis_client
        except ModuleNotFoundError as err:
            raise ConfigurationError(
                "PESA_SHARED_STATE=redis needs the redis package: pip install 'pesa[redis]'"
            ) from err
        client = redis_client(settings.redis_url)
        return SharedState(
            "redis",
            RedisTokenStore(client),
            {name: RedisBucketState(client, name) for name in BUDGETS},
        )
    from pesa.ledger._shared import DatabaseBucketState, DatabaseTokenStore

    engine = ledger.engine
    return SharedState(
        "database",
        DatabaseTokenStore(engine),
        {name: DatabaseBucketState(engine, name) for name in BUDGETS},
    )
