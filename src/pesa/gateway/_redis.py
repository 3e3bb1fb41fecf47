"""The shared token and rate budgets in Redis (``PESA_SHARED_STATE=redis``).

Needs the ``redis`` package (``pip install 'pesa[redis]'``). Keys:

- ``<token key>``: a hash (``sealed``, ``fingerprint``, ``expires_at`` as epoch seconds)
  and ``<token key>:fetching``, the fetch lease (``SET NX PX``);
- ``pesa:budget:<name>``: a hash (``tat``, ``paused_until``) stepped by
  :func:`pesa._bucket.gcra` inside ``WATCH``/``MULTI``, on Redis's clock (``TIME``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from pesa._bucket import Grant, gcra
from pesa.client._token import InMemoryTokenStore, StoredToken

__all__ = ["RedisBucketState", "RedisTokenStore", "redis_client"]

# Atomic: take the lease only if the token is missing, expired or the refused one.
_CLAIM = """
local fp = redis.call('HGET', KEYS[1], 'fingerprint')
local exp = tonumber(redis.call('HGET', KEYS[1], 'expires_at') or '0')
if fp and exp > tonumber(ARGV[1]) and fp ~= ARGV[3] then
  return 0
end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
"""


def redis_client(url: str) -> Redis:
    """An asyncio Redis client for ``url`` (``redis://host:port/db``)."""
    return Redis.from_url(url, decode_responses=True)


class RedisTokenStore(InMemoryTokenStore):
    """Access tokens shared through Redis (sealed, as in :class:`DatabaseTokenStore`).

    This process reads its in-memory copy on every request and Redis only when that is
    missing, expired or refused.
    """

    def __init__(self, client: Redis) -> None:
        super().__init__()
        self._redis = client
        self._claim: Any = client.register_script(_CLAIM)

    def __repr__(self) -> str:
        return "RedisTokenStore()"

    async def load(self, key: str) -> StoredToken | None:
        """The shared token of ``key``, or ``None``."""
        raw = await self._redis.hgetall(key)
        entry = {str(k): str(v) for k, v in raw.items()}
        try:
            expires = datetime.fromtimestamp(float(entry["expires_at"]), UTC)
            return StoredToken(entry["sealed"], entry["fingerprint"], expires)
        except (KeyError, ValueError):
            return None

    async def claim(self, key: str, *, now: datetime, lease: float, refused: str | None) -> bool:
        """Take the fetch lease if it is free and the shared token is not usable."""
        taken = await self._claim(
            keys=[key, f"{key}:fetching"],
            args=[now.timestamp(), max(1, int(lease * 1000)), refused or ""],
        )
        return bool(int(taken))

    async def save(self, key: str, token: StoredToken) -> None:
        """Share ``token`` and give up the fetch lease."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "sealed": token.sealed,
                    "fingerprint": token.fingerprint,
                    "expires_at": str(token.expires_at.timestamp()),
                },
            )
            pipe.delete(f"{key}:fetching")
            await pipe.execute()

    async def release(self, key: str) -> None:
        """Give up the fetch lease (the fetch failed)."""
        await self._redis.delete(f"{key}:fetching")


class RedisBucketState:
    """One global rate budget in Redis (see :mod:`pesa._bucket`)."""

    def __init__(self, client: Redis, name: str) -> None:
        self._redis = client
        self.name = name
        self._key = f"pesa:budget:{name}"
        self.steps = 0

    def __repr__(self) -> str:
        return f"RedisBucketState({self.name!r})"

    async def astep(
        self, *, interval: float, tolerance: float, pause: float, conditional: bool, take: bool
    ) -> tuple[Grant, float]:
        """Apply :func:`pesa._bucket.gcra` to the budget's hash, retrying on a conflict."""
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(self._key)
                    tat, paused = await pipe.hmget(self._key, ["tat", "paused_until"])
                    seconds, micros = await pipe.time()
                    now = seconds + micros / 1e6
                    grant = gcra(
                        float(tat or 0.0),
                        float(paused or 0.0),
                        now,
                        interval=interval,
                        tolerance=tolerance,
                        pause=pause,
                        conditional=conditional,
                        take=take,
                    )
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hset(
                        self._key,
                        mapping={"tat": repr(grant.tat), "paused_until": repr(grant.paused_until)},
                    )
                    await pipe.execute()
                except WatchError:
                    continue
                self.steps += 1
                return grant, now
