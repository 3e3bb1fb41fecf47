"""The one options type of :class:`Daraja` and :class:`AsyncDaraja`, checked once.

A constructor option is declared here and nowhere else: a field of :class:`DarajaOptions`
(its default, its check in ``__post_init__``) and the same name in
:class:`DarajaOptionFields`, the keyword arguments both clients accept. mypy checks that
the two agree (``DarajaOptions(**fields)`` is type-checked) and a test checks that no
field is missing from either. If the option comes from the environment, add the
``Settings`` field and one line to :meth:`DarajaOptions.from_settings`.
"""

from __future__ import annotations

import dataclasses
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Self, TypedDict, Unpack, get_args

from pesa._constants import (
    BASE_URLS,
    DEFAULT_B2B_MAX_AMOUNT,
    DEFAULT_B2B_MIN_AMOUNT,
    DEFAULT_B2C_MAX_AMOUNT,
    DEFAULT_B2C_MIN_AMOUNT,
    DEFAULT_ENVIRONMENT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_RATIBA_TILL_TRANSACTION_TYPE,
    DEFAULT_STK_MAX_AMOUNT,
    DEFAULT_STK_MIN_AMOUNT,
    DEFAULT_TIMEOUT,
    Environment,
)
from pesa._exceptions import ConfigurationError
from pesa.client._retry import RetryPolicy
from pesa.client._token import FileTokenStore, TokenStore
from pesa.daraja._time import Clock

if TYPE_CHECKING:
    from pesa.config import Settings

__all__ = ["DarajaOptionFields", "DarajaOptions"]

_ENVIRONMENTS: Final = get_args(Environment)
ASYNC_HTTP_BACKENDS: Final = ("httpx", "aiohttp")
"""AsyncDaraja's connection pools: httpx's own, or aiohttp's through an httpx transport."""


class DarajaOptionFields(TypedDict, total=False):
    """The keyword arguments of ``Daraja(...)``, ``AsyncDaraja(...)`` and ``from_settings``.

    Each is documented on :class:`DarajaOptions`.
    """

    environment: Environment | str
    base_url: str | None
    consumer_key: str | None
    consumer_secret: str | None
    shortcode: str | int | None
    passkey: str | None
    till: str | int | None
    initiator_name: str | None
    initiator_password: str | None
    security_credential: str | None
    certificate_path: str | Path | None
    callback_url: str | None
    result_url: str | None
    timeout_url: str | None
    timeout: float
    max_retries: int
    retry_policy: RetryPolicy | None
    rate_limit: float | None
    clock: Clock | None
    token_store: TokenStore | None
    verify: bool | str | Path | ssl.SSLContext
    async_http: str
    stk_amount_limits: tuple[int, int]
    b2c_amount_limits: tuple[int, int]
    b2b_amount_limits: tuple[int, int]
    pull_transactions_method: str
    ratiba_till_transaction_type: str


def _text(value: str | int | None) -> str | None:
    return None if value is None or value == "" else str(value)


@dataclass(frozen=True, kw_only=True, slots=True)
class DarajaOptions:
    """Everything a Daraja client is configured with; immutable and checked when built.

    Example:
        >>> options = DarajaOptions(environment="sandbox", shortcode=174379)
        >>> Daraja(options, timeout=10)  # keyword arguments replace fields  # doctest: +SKIP

    Attributes:
        environment: ``"emulator"`` (default), ``"sandbox"`` or ``"production"``;
            production is never chosen implicitly.
        base_url: overrides the environment's base URL.
        consumer_key: the Daraja app's consumer key.
        consumer_secret: the Daraja app's consumer secret.
        shortcode: PayBill / HO number (``BusinessShortCode``; ``PartyA`` for B2C).
        passkey: the Lipa Na M-Pesa Online passkey.
        till: a till number: STK pushes become Buy Goods with ``PartyB`` = till.
        initiator_name: the API operator for initiator APIs.
        initiator_password: the operator's password, encrypted into the credential.
        security_credential: a ready ``SecurityCredential`` (skips the encryption).
        certificate_path: the certificate to encrypt the credential with (required for the
            emulator; defaults to the bundled sandbox/production certificate).
        callback_url: default STK ``CallBackURL``.
        result_url: default ``ResultURL`` of the initiator APIs.
        timeout_url: default ``QueueTimeOutURL``.
        timeout: seconds per HTTP request (connect is capped at 10 s).
        max_retries: re-sends of safe requests (money-moving ones: only if never sent).
        retry_policy: the full policy (overrides ``max_retries``).
        rate_limit: at most this many requests per second from this client.
        clock: where timestamps and token expiry read the time.
        token_store: where tokens are cached (share one between processes).
        verify: TLS verification: ``True``, ``False`` or a CA bundle path (the emulator's
            ``--tls`` certificate, ``PESA_CA_BUNDLE``).
        async_http: :class:`AsyncDaraja`'s connection pool: ``"httpx"`` (default) or
            ``"aiohttp"`` (``pesa[aiohttp]``, much less CPU per request under concurrency);
            ``Daraja`` ignores it, an explicit ``transport=`` wins.
        stk_amount_limits: ``(minimum, maximum)`` whole shillings of STK, C2B, reversal.
        b2c_amount_limits: ``(minimum, maximum)`` whole shillings of B2C and Business to
            Pochi.
        b2b_amount_limits: ``(minimum, maximum)`` whole shillings of B2B, tax remittance and
            B2B Express Checkout (not in the reference [U]: the general 250,000 cap).
        pull_transactions_method: ``"POST"`` (default: the docs' sample and every SDK) or
            ``"GET"`` (the docs' table) for the Pull Transactions query [U].
        ratiba_till_transaction_type: the Ratiba ``TransactionType`` of a till: the docs'
            ``"Standing Order Customer Pay Marchant"`` (default) or an SDK's "Merchant" [U].
    """

    environment: Environment | str = DEFAULT_ENVIRONMENT
    base_url: str | None = None
    consumer_key: str | None = None
    consumer_secret: str | None = field(default=None, repr=False)
    shortcode: str | int | None = None
    passkey: str | None = field(default=None, repr=False)
    till: str | int | None = None
    initiator_name: str | None = None
    initiator_password: str | None = field(default=None, repr=False)
    security_credential: str | None = field(default=None, repr=False)
    certificate_path: str | Path | None = None
    callback_url: str | None = None
    result_url: str | None = None
    timeout_url: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_policy: RetryPolicy | None = None
    rate_limit: float | None = None
    clock: Clock | None = None
    token_store: TokenStore | None = None
    verify: bool | str | Path | ssl.SSLContext = True
    async_http: str = "httpx"
    stk_amount_limits: tuple[int, int] = (DEFAULT_STK_MIN_AMOUNT, DEFAULT_STK_MAX_AMOUNT)
    b2c_amount_limits: tuple[int, int] = (DEFAULT_B2C_MIN_AMOUNT, DEFAULT_B2C_MAX_AMOUNT)
    b2b_amount_limits: tuple[int, int] = (DEFAULT_B2B_MIN_AMOUNT, DEFAULT_B2B_MAX_AMOUNT)
    pull_transactions_method: str = "POST"
    ratiba_till_transaction_type: str = DEFAULT_RATIBA_TILL_TRANSACTION_TYPE

    def __post_init__(self) -> None:
        if self.environment not in _ENVIRONMENTS:
            raise ConfigurationError(
                f"PESA_ENV must be one of {', '.join(_ENVIRONMENTS)} (got {self.environment!r})"
            )
        url = self.url
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"PESA_BASE_URL must be an http(s) URL (got {url!r})")
        timeout = self.timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigurationError(f"PESA_TIMEOUT must be a positive number (got {timeout!r})")
        retries = self.max_retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigurationError(f"PESA_MAX_RETRIES must be >= 0 (got {retries!r})")
        if self.rate_limit is not None and not self.rate_limit > 0:
            raise ConfigurationError(f"PESA_RATE_LIMIT must be > 0 (got {self.rate_limit!r})")
        if self.async_http not in ASYNC_HTTP_BACKENDS:
            raise ConfigurationError(
                f"PESA_ASYNC_HTTP must be one of {', '.join(ASYNC_HTTP_BACKENDS)} "
                f"(got {self.async_http!r})"
            )
        if self.pull_transactions_method not in ("POST", "GET"):
            raise ConfigurationError(
                "pull_transactions_method must be 'POST' or 'GET' "
                f"(got {self.pull_transactions_method!r})"
            )
        if not self.ratiba_till_transaction_type.strip():
            raise ConfigurationError("ratiba_till_transaction_type must not be empty")
        for name in ("stk_amount_limits", "b2c_amount_limits", "b2b_amount_limits"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ConfigurationError(f"{name} must be (minimum, maximum) with 0 < min <= max")
        # Normalised once: a shortcode may be given as an int, an empty string means unset.
        for name in ("shortcode", "till"):
            object.__setattr__(self, name, _text(getattr(self, name)))
        for name in (
            "consumer_key",
            "consumer_secret",
            "passkey",
            "initiator_name",
            "initiator_password",
            "security_credential",
            "callback_url",
            "result_url",
            "timeout_url",
        ):
            object.__setattr__(self, name, getattr(self, name) or None)

    @property
    def url(self) -> str:
        """The base URL in use: ``base_url``, or the environment's."""
        given = self.base_url or BASE_URLS.get(str(self.environment), "")
        return given.strip().rstrip("/")

    def replace(self, **changes: Unpack[DarajaOptionFields]) -> Self:
        """A copy with some fields changed (checked again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Unpack[DarajaOptionFields]) -> Self:
        """The options a :class:`pesa.Settings` describes; keyword arguments win."""

        def secret(name: str) -> str | None:
            value: Any = getattr(settings, name)
            return None if value is None else str(value.get_secret_value())

        fields: DarajaOptionFields = {
            "environment": settings.env,
            "base_url": settings.base_url,
            "consumer_key": secret("consumer_key"),
            "consumer_secret": secret("consumer_secret"),
            "shortcode": settings.shortcode,
            "passkey": secret("passkey"),
            "till": settings.till,
            "initiator_name": settings.initiator_name,
            "initiator_password": secret("initiator_password"),
            "certificate_path": settings.certificate_path,
            "callback_url": settings.callback_url,
            "result_url": settings.result_url,
            "timeout_url": settings.timeout_url,
            "timeout": settings.timeout,
            "max_retries": settings.max_retries,
            "rate_limit": settings.rate_limit,
            "pull_transactions_method": settings.pull_transactions_method,
            "async_http": settings.async_http,
            "token_store": (
                FileTokenStore(settings.token_cache_path) if settings.token_cache_path else None
            ),
        }
        if settings.ca_bundle is not None:
            fields["verify"] = settings.ca_bundle
        fields.update(overrides)
        return cls(**fields)
