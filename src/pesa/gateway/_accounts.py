"""The gateway's Daraja accounts and one client per account.

:class:`pesa.Accounts` says what each account is; :class:`AccountClients` holds the
:class:`pesa.AsyncDaraja` that acts for each one. Clients of accounts with the same consumer
key share one token cache (one token per Daraja app, as REFERENCE §3 advises).

In the ``emulator`` environment a fresh checkout needs no credentials: an account without a
consumer key gets a placeholder the emulator accepts, the default account without a
shortcode gets the public sandbox shortcode 174379, and the default account with a shortcode
but no passkey gets the public sandbox passkey. The mounted emulator is told every account's
shortcode and passkey, so any passkey configured for another account works there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from pesa._exceptions import ConfigurationError
from pesa._logging import get_logger
from pesa.client import AsyncDaraja, FileTokenStore, InMemoryTokenStore, TokenStore
from pesa.client._accounts import Account, Accounts
from pesa.config import Settings
from pesa.daraja import (
    SANDBOX_INITIATOR,
    SANDBOX_INITIATOR_PASSWORD,
    SANDBOX_PASSKEY,
    SANDBOX_STK_SHORTCODE,
    bundled_certificate,
    security_credential,
)

__all__ = [
    "EMULATOR_CONSUMER_KEY",
    "EMULATOR_CONSUMER_SECRET",
    "AccountClients",
    "effective_accounts",
    "emulator_passkeys",
]

log = get_logger("pesa.gateway")

EMULATOR_CONSUMER_KEY = "pesa-emulator"
EMULATOR_CONSUMER_SECRET = "pesa-emulator"  # a public placeholder, not a secret


def effective_accounts(settings: Settings) -> Accounts:
    """The accounts a gateway runs with: as configured, plus the emulator's fallbacks.

    Raises:
        ConfigurationError: every problem of the account configuration at once.
    """
    accounts = Accounts.from_settings(settings)
    if settings.env != "emulator":
        return accounts
    filled = [_emulator_fallbacks(a, a.name == accounts.default_name) for a in accounts.values()]
    return Accounts(filled, accounts.default_name)


def _emulator_fallbacks(account: Account, is_default: bool) -> Account:
    updates: dict[str, Any] = {}
    if account.consumer_key is None or account.consumer_secret is None:
        updates["consumer_key"] = SecretStr(EMULATOR_CONSUMER_KEY)
        updates["consumer_secret"] = SecretStr(EMULATOR_CONSUMER_SECRET)
    shortcode = account.shortcode
    if shortcode is None and is_default:
        shortcode = updates["shortcode"] = SANDBOX_STK_SHORTCODE
    if is_default and shortcode is not None and account.passkey is None:
        # The mounted emulator is told this pair (emulator_passkeys). Other accounts keep
        # what they are configured with: a B2C shortcode does not take STK pushes.
        updates["passkey"] = SecretStr(SANDBOX_PASSKEY)
    if is_default and account.initiator_name is None and account.initiator_password is None:
        # The public sandbox initiator (REFERENCE §2), which the emulator knows: payouts,
        # refunds and balances work on a fresh checkout too.
        updates["initiator_name"] = SANDBOX_INITIATOR
        updates["initiator_password"] = SecretStr(SANDBOX_INITIATOR_PASSWORD)
    return account.model_copy(update=updates) if updates else account


def emulator_passkeys(accounts: Accounts) -> dict[str, str]:
    """The STK shortcodes and passkeys the mounted emulator must accept."""
    passkeys = {SANDBOX_STK_SHORTCODE: SANDBOX_PASSKEY}
    for account in accounts.values():
        if account.shortcode is not None and account.passkey is not None:
            passkeys.setdefault(account.shortcode, account.passkey.get_secret_value())
    return passkeys


class AccountClients:
    """One :class:`pesa.AsyncDaraja` per account, built from the settings.

    Args:
        accounts: the accounts (with the emulator's fallbacks applied, in ``emulator``).
        clients: account name → its client.
        owned: the clients this object closes in :meth:`aclose`.

    Example:
        >>> clients = AccountClients.build(settings, accounts)     # doctest: +SKIP
        >>> await clients.for_account("payouts").account_balance()  # doctest: +SKIP
    """

    def __init__(
        self,
        accounts: Accounts,
        clients: Mapping[str, AsyncDaraja],
        *,
        owned: tuple[AsyncDaraja, ...] = (),
    ) -> None:
        missing = [name for name in accounts if name not in clients]
        if missing:
            raise ConfigurationError(f"no client for account(s) {', '.join(missing)}")
        self.accounts = accounts
        self._clients = dict(clients)
        self._owned = owned

    @classmethod
    def build(
        cls,
        settings: Settings,
        accounts: Accounts,
        *,
        emulator_url: str | None = None,
        callback_url: str | None = None,
        default_client: AsyncDaraja | None = None,
        emulator_certificate: bytes | None = None,
        token_store: TokenStore | None = None,
    ) -> AccountClients:
        """Build a client per account (``default_client`` for the default one, if given).

        In ``emulator`` the clients talk to ``emulator_url`` (the mounted emulator) unless
        ``PESA_BASE_URL`` points elsewhere; an account with an initiator but no
        ``certificate_path`` encrypts its password with ``emulator_certificate`` (the mounted
        emulator's), so that no certificate file is needed. ``token_store`` (the
        deployment's shared one, see :mod:`pesa.gateway._shared`) beats
        ``PESA_TOKEN_CACHE_PATH``.
        """
        store: TokenStore = token_store or (
            FileTokenStore(settings.token_cache_path)
            if settings.token_cache_path
            else InMemoryTokenStore()
        )
        overrides: dict[str, Any] = {"token_store": store}
        if callback_url is not None:
            overrides["callback_url"] = callback_url
        if settings.env == "emulator" and settings.base_url is None and emulator_url is not None:
            overrides["base_url"] = emulator_url
        clients: dict[str, AsyncDaraja] = {}
        owned: list[AsyncDaraja] = []
        for name, account in accounts.items():
            if name == accounts.default_name and default_client is not None:
                clients[name] = default_client
                continue
            options = {**overrides, **account.client_options()}
            if (
                settings.env == "emulator"
                and account.initiator_password is not None
                and account.certificate_path is None
            ):
                # The mounted emulator's certificate; for an emulator in its own process,
                # the bundled sandbox one, which a lenient emulator accepts (a strict one
                # needs PESA_CERTIFICATE_PATH).
                certificate: Any = bundled_certificate("sandbox")
                if emulator_certificate is not None and settings.base_url is None:
                    certificate = emulator_certificate
                options["security_credential"] = security_credential(
                    account.initiator_password.get_secret_value(), certificate
                )
            client = AsyncDaraja.from_settings(settings, **options)
            clients[name] = client
            owned.append(client)
        return cls(accounts, clients, owned=tuple(owned))

    @property
    def default(self) -> AsyncDaraja:
        """The default account's client."""
        return self._clients[self.accounts.default_name]

    def for_account(self, name: str | None) -> AsyncDaraja:
        """The client of account ``name`` (the default one for ``None``).

        Raises:
            ValidationError: no account has this name.
        """
        return self._clients[self.accounts.resolve(name).name]

    def rebase(self, base_url: str) -> None:
        """Point the clients this object built at another base URL (the mounted emulator
        found on another port)."""
        for client in self._owned:
            client._rebase(base_url)

    async def aclose(self) -> None:
        """Close the clients this object built."""
        for client in self._owned:
            await client.aclose()
