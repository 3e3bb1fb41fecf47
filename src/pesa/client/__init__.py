"""The Daraja clients, :class:`Daraja` and :class:`AsyncDaraja`, their token and retry parts,
and the named accounts (:class:`Accounts`) they act for."""

from pesa.client._accounts import DEFAULT_ACCOUNT, Account, Accounts
from pesa.client._client import AsyncDaraja, Daraja
from pesa.client._options import DarajaOptionFields, DarajaOptions
from pesa.client._pacing import RateLimiter
from pesa.client._retry import RetryPolicy, should_retry
from pesa.client._token import (
    AccessToken,
    DarajaAuth,
    FileTokenStore,
    InMemoryTokenStore,
    SharedTokenStore,
    StoredToken,
    TokenStore,
)

__all__ = [
    "DEFAULT_ACCOUNT",
    "AccessToken",
    "Account",
    "Accounts",
    "AsyncDaraja",
    "Daraja",
    "DarajaAuth",
    "DarajaOptionFields",
    "DarajaOptions",
    "FileTokenStore",
    "InMemoryTokenStore",
    "RateLimiter",
    "RetryPolicy",
    "SharedTokenStore",
    "StoredToken",
    "TokenStore",
    "should_retry",
]
