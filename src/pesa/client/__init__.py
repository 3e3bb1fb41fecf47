"""The Daraja clients, :class:`Daraja` and :class:`AsyncDaraja`, and their token and retry parts."""

from pesa.client._client import AsyncDaraja, Daraja
from pesa.client._options import DarajaOptionFields, DarajaOptions
from pesa.client._pacing import RateLimiter
from pesa.client._retry import RetryPolicy, should_retry
from pesa.client._token import (
    AccessToken,
    DarajaAuth,
    FileTokenStore,
    InMemoryTokenStore,
    TokenStore,
)

__all__ = [
    "AccessToken",
    "AsyncDaraja",
    "Daraja",
    "DarajaAuth",
    "DarajaOptionFields",
    "DarajaOptions",
    "FileTokenStore",
    "InMemoryTokenStore",
    "RateLimiter",
    "RetryPolicy",
    "TokenStore",
    "should_retry",
]
