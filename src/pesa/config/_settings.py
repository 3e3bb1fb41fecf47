"""The one settings object of pesa, read from ``PESA_*`` variables (and a ``.env`` file).

Only the CLI and the application factories build a :class:`Settings`; nothing below them
reads ``os.environ``. Constructor arguments beat the environment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pesa._constants import (
    DEFAULT_CALLBACK_ALLOWED_IPS,
    DEFAULT_DATABASE_URL,
    DEFAULT_EMULATOR_HOST,
    DEFAULT_EMULATOR_PORT,
    DEFAULT_ENVIRONMENT,
    DEFAULT_GATEWAY_HOST,
    DEFAULT_GATEWAY_PORT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    Environment,
)
from pesa._exceptions import ConfigurationError

__all__ = ["Settings", "configuration_error", "default_of"]


def _problem(error: Any, flags: dict[str, str]) -> str:
    loc = [str(part) for part in error.get("loc", ()) if part not in ("", "__root__")]
    name = loc[0] if loc else ""
    # pydantic prefixes messages of validators ("Value error, ...") and enum checks
    # ("Input should be ..."): keep only the rule.
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    message = message.replace("Input should be", "must be")
    given = error.get("input")
    field = Settings.model_fields.get(name)
    secret = field is not None and "SecretStr" in repr(field.annotation)
    hide = given is None or isinstance(given, dict) or secret or repr(given) in message
    shown = "" if hide else f" (got {given!r})"
    if not name:
        return f"{message}{shown}"
    where = flags.get(name) or f"PESA_{name.upper()}"
    return f"{where}: {message}{shown}"


def configuration_error(
    err: PydanticValidationError, flags: dict[str, str] | None = None
) -> ConfigurationError:
    """One :class:`ConfigurationError` naming every bad setting (its variable, or its flag).

    Args:
        err: pydantic's error.
        flags: setting name → command-line flag, for settings given as flags.
    """
    problems = [_problem(e, flags or {}) for e in err.errors()]
    if len(problems) == 1:
        return ConfigurationError(problems[0])
    return ConfigurationError(
        f"{len(problems)} settings are invalid:\n" + "\n".join(f"  {p}" for p in problems)
    )


class Settings(BaseSettings):
    """Every setting of pesa. Each field ``x`` is read from ``PESA_X``.

    Raises:
        ConfigurationError: one or more settings are invalid (every one is named).
    """

    model_config = SettingsConfigDict(
        env_prefix="PESA_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    # -- Daraja client ------------------------------------------------------------------
    env: Environment = Field(DEFAULT_ENVIRONMENT, description="emulator, sandbox or production")
    base_url: str | None = Field(None, description="overrides the environment's base URL")
    consumer_key: SecretStr | None = Field(None, description="Daraja app consumer key")
    consumer_secret: SecretStr | None = Field(None, description="Daraja app consumer secret")
    shortcode: str | None = Field(None, description="PayBill / HO number (BusinessShortCode)")
    passkey: SecretStr | None = Field(None, description="Lipa Na M-Pesa Online passkey")
    till: str | None = Field(None, description="till number for Buy Goods STK pushes (PartyB)")
    initiator_name: str | None = Field(
        None, description="API operator (initiator) for B2C, status, balance and reversal"
    )
    initiator_password: SecretStr | None = Field(
        None, description="initiator password, encrypted into the SecurityCredential"
    )
    certificate_path: Path | None = Field(
        None, description="PEM/DER certificate to encrypt the SecurityCredential with"
    )
    callback_url: str | None = Field(None, description="default STK CallBackURL")
    result_url: str | None = Field(None, description="default ResultURL for initiator APIs")
    timeout_url: str | None = Field(None, description="default QueueTimeOutURL")
    timeout: float = Field(DEFAULT_TIMEOUT, gt=0, description="seconds per HTTP request")
    max_retries: int = Field(DEFAULT_MAX_RETRIES, ge=0, description="retries of safe requests")
    rate_limit: float | None = Field(None, gt=0, description="requests per second, per client")
    async_http: Literal["httpx", "aiohttp"] = Field(
        "httpx",
        description="AsyncDaraja's connection pool: httpx (its own) or aiohttp (pip install "
        "'pesa[aiohttp]'; about 3x the throughput under concurrency)",
    )
    ca_bundle: Path | None = Field(
        None,
        description="CA certificate file the client trusts for Daraja's TLS (the emulator's "
        "--tls CA); default: the system's CAs",
    )
    token_cache_path: Path | None = Field(
        None, description="JSON file sharing the access token between processes (mode 0600)"
    )
    log: str = Field("warning", description="log level of the pesa logger")
    accounts_file: Path | None = Field(
        None,
        description="TOML file of named Daraja accounts (PayBills, Tills, B2C shortcodes); "
        "the variables above are the account named default",
    )
    c2b_register: bool = Field(
        False, description="register the default account's C2B URLs when the gateway starts"
    )
    c2b_version: Literal[1, 2] = Field(
        2, description="C2B API version of the default account (1: hashed MSISDN, 2: masked)"
    )
    c2b_response_type: Literal["Completed", "Cancelled"] = Field(
        "Completed",
        description="what Daraja does with a C2B payment when validation does not answer in "
        "time (default account)",
    )

    # -- Gateway --------------------------------------------------------------------------
    database_url: str = Field(DEFAULT_DATABASE_URL, description="SQLAlchemy URL of the ledger")
    api_key: SecretStr | None = Field(None, description="bearer key for the REST API")
    gateway_host: str = Field(DEFAULT_GATEWAY_HOST, description="address `pesa serve` binds")
    gateway_port: int = Field(
        DEFAULT_GATEWAY_PORT, ge=0, le=65535, description="port `pesa serve` binds (0: any free)"
    )
    public_url: str | None = Field(
        None,
        description="URL where Daraja reaches this gateway (https://pay.example.com); "
        "callbacks go to <public_url>/callbacks/<callback_token>/stk",
    )
    callback_token: SecretStr | None = Field(
        None,
        description="secret path segment of the callback URL (random per start in emulator)",
    )
    callback_allowlist: Literal["off", "log", "enforce"] = Field(
        "off",
        description="check callback source IPs: off, log (accept but warn) or enforce (403)",
    )
    callback_allowed_ips: Annotated[tuple[str, ...], NoDecode] = Field(
        DEFAULT_CALLBACK_ALLOWED_IPS,
        description="comma-separated IPs/CIDRs Daraja calls back from "
        "(docs/daraja-reference.md §11)",
    )
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="comma-separated IPs/CIDRs of proxies whose X-Forwarded-For is believed",
    )
    callback_on_mismatch: Literal["refuse", "flag"] = Field(
        "refuse",
        description="a callback success whose amount or phone differs from the request: "
        "refuse (400, stored as invalid) or flag (200, its values recorded); either way "
        "only Daraja's STK query settles the payment, flagged if Daraja confirms it",
    )
    c2b_verify: Literal["auto", "always", "never"] = Field(
        "auto",
        description="C2B confirmations count once Daraja's Transaction Status confirms them: "
        "auto (when the account has an initiator, else counted and flagged unverified), "
        "always (every C2B account needs an initiator) or never (trusted as received)",
    )
    c2b_pull_interval: float = Field(
        0.0,
        ge=0,
        description="seconds between Pull Transactions rounds recovering C2B payments whose "
        "confirmation never came (0: off; each account's shortcode must be registered for "
        "Pull Transactions)",
    )
    c2b_pull_window: float = Field(
        6 * 3600.0,
        gt=0,
        le=48 * 3600.0,
        description="how far back each Pull Transactions round reads, seconds (at most 48 "
        "hours, as far as Daraja keeps them)",
    )
    pull_transactions_method: Literal["POST", "GET"] = Field(
        "POST",
        description="HTTP method of the Pull Transactions query: POST (the docs' sample, every "
        "SDK) or GET (the docs' table); unverified",
    )
    c2b_validation: Literal["off", "handler", "http", "expected"] = Field(
        "off",
        description="who answers C2B validation requests: off (accept all), handler (a "
        "Python function given to create_app, or Django's PESA_C2B_VALIDATOR setting), http "
        "(PESA_C2B_VALIDATION_URL) or expected (accept only account numbers of open expected "
        "payments; gateway only)",
    )
    c2b_validation_url: str | None = Field(
        None, description="the merchant URL asked to accept or reject each C2B payment (http)"
    )
    c2b_validation_timeout: float = Field(
        3.0,
        gt=0,
        lt=8,
        description="seconds the merchant's rule has to answer before the fallback applies "
        "(Daraja waits about 8 s)",
    )
    c2b_validation_fallback: Literal["accept", "reject"] = Field(
        "accept",
        description="the answer to a C2B validation when the merchant's rule is slow, "
        "unreachable or fails (reject uses C2B00016)",
    )
    api_max_body_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="largest request body of the REST API, in bytes (413 beyond; checked "
        "after the API key, before the body is read)",
    )
    batch_max_body_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        description="largest body of POST /v1/payouts/batches, in bytes (a batch of "
        "10,000 rows needs about 2 MiB)",
    )
    callback_max_body_bytes: int = Field(
        32 * 1024,
        ge=1024,
        description="largest callback body, in bytes (413 beyond; a real one is under 2 KiB)",
    )
    max_connections: int = Field(
        2048,
        ge=1,
        description="open connections and requests in flight `pesa serve` allows before "
        "answering 503 at once (it raises its open-file limit to match)",
    )
    read_timeout: float = Field(
        10.0,
        gt=0,
        description="seconds a client has to send a complete request, headers and body "
        "(slower or idle connections are closed)",
    )
    keep_alive_timeout: int = Field(
        5, ge=1, description="seconds an idle keep-alive connection is kept open"
    )
    shared_state: Literal["auto", "database", "redis", "process"] = Field(
        "auto",
        description="where the processes of one deployment share the Daraja access token "
        "and the rate budgets (reconcile_query_rate, payout_rate): database (the ledger's "
        "tables), redis (PESA_REDIS_URL), process (each process its own) or auto "
        "(database on PostgreSQL, process on SQLite)",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis holding the shared token and rate budgets when shared_state is "
        "redis (needs pip install 'pesa[redis]')",
    )
    run_workers: bool = Field(
        True, description="run the reconciler and webhook dispatcher inside `pesa serve`"
    )
    auto_migrate: bool = Field(
        True, description="apply database migrations when `pesa serve` starts"
    )

    # -- Dashboard (pesa serve at /dashboard) ---------------------------------------------
    dashboard: bool = Field(
        True,
        description="serve the operator dashboard at /dashboard (add operators with "
        "`pesa operator add`)",
    )
    dashboard_session_ttl: float = Field(
        28800.0, gt=0, description="seconds a dashboard sign-in lasts before signing in again"
    )
    dashboard_max_sign_in_failures: int = Field(
        5,
        ge=1,
        description="failed dashboard sign-ins per name or per address within 15 minutes "
        "before sign-in is refused until the oldest ages out",
    )
    dashboard_refresh_interval: float = Field(
        5.0, gt=0, description="seconds between live updates of dashboard lists and pages"
    )

    @field_validator("callback_allowed_ips", "trusted_proxies", mode="before")
    @classmethod
    def _split_comma_list(cls, value: Any) -> Any:
        # Environment variables are plain text: "1.2.3.4, 10.0.0.0/8" becomes a tuple.
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    # -- Emulator (pesa emulator, and the emulator mounted by pesa serve) ----------------------
    emulator_host: str = Field(DEFAULT_EMULATOR_HOST, description="address pesa emulator binds")
    emulator_port: int = Field(
        DEFAULT_EMULATOR_PORT, ge=0, le=65535, description="port pesa emulator listens on"
    )
    emulator_strict: bool = Field(
        False,
        description="emulator checks consumer key/secret exactly and decrypts SecurityCredentials",
    )
    emulator_stk_delay: float = Field(
        1.0, ge=0, description="seconds before the emulated customer answers an STK prompt"
    )
    emulator_result_delay: float = Field(
        0.2, ge=0, description="seconds before the emulator sends B2C/status/balance Results"
    )
    emulator_latency_ms: float = Field(
        0.0, ge=0, description="milliseconds the emulator adds to every Daraja response"
    )
    emulator_rate_limit: float | None = Field(
        None, gt=0, description="emulator requests per second per app before spike arrest"
    )
    emulator_seed: int | None = Field(
        None, description="seed making emulator ids and fault draws reproducible"
    )
    emulator_key_dir: Path | None = Field(
        None, description="directory keeping the emulator's RSA key and TLS certificates"
    )
    emulator_callback_retries: int = Field(
        0, ge=0, description="times the emulator re-delivers a failed callback"
    )

    # -- Workers (reconciler, webhook dispatcher) ------------------------------------------
    reconcile_interval: float = Field(
        5.0, gt=0, description="seconds between reconciliation rounds when there is no work"
    )
    reconcile_min_age: float = Field(
        20.0,
        ge=0,
        description="seconds a payment waits for its callback before the first STK query",
    )
    reconcile_recheck_interval: float = Field(
        10.0,
        gt=0,
        description="seconds before re-querying a payment that is still pending; "
        "grows by half on each check",
    )
    reconcile_recheck_cap: float = Field(
        120.0, gt=0, description="longest wait, in seconds, between two queries of one payment"
    )
    reconcile_deadline: float = Field(
        900.0,
        gt=0,
        description="seconds after creation after which a payment with no final answer "
        "fails with reason expired",
    )
    reconcile_query_rate: float = Field(
        2.0,
        gt=0,
        description="STK and Transaction Status queries per second, at most: across every "
        "process when the state is shared (shared_state), else per process",
    )
    reconcile_query_burst: int = Field(
        1, ge=1, description="STK queries a worker may send at once after being idle"
    )
    reconcile_batch_size: int = Field(
        50, ge=1, description="payments claimed per reconciliation round"
    )
    reconcile_lease: float = Field(
        120.0,
        gt=0,
        description="seconds a claimed payment stays reserved to one worker (a crashed "
        "worker's claims return after this)",
    )
    reconcile_stale_created_after: float = Field(
        300.0,
        gt=0,
        description="seconds after which a payment still in created (the process died "
        "around the STK push) is marked unknown",
    )
    reconcile_backoff_base: float = Field(
        5.0, gt=0, description="seconds of pause after a spike arrest; doubles on each in a row"
    )
    reconcile_backoff_cap: float = Field(
        300.0, gt=0, description="longest pause, in seconds, after repeated spike arrests"
    )
    # -- Payouts, refunds and balances ---------------------------------------------------------
    payout_rate: float = Field(
        5.0,
        gt=0,
        description="B2C and reversal requests per second, at most, across every process "
        "when the state is shared (shared_state), else per process (keep it under "
        "Daraja's spike-arrest limit); batches are paced at this rate",
    )
    payout_status_after: float = Field(
        30.0,
        ge=0,
        description="seconds a pending payout or refund waits for its Result, from its "
        "first send, before Transaction Status is asked",
    )
    payout_deadline: float = Field(
        3600.0,
        gt=0,
        description="seconds after its first send (not its creation: a batch row may wait "
        "behind payout_rate) after which a payout or refund with no final answer is flagged "
        "(it stays unknown: verify it by hand) and no longer checked",
    )
    payout_resend: bool = Field(
        True,
        description="send again, with the same OriginatorConversationID, a payout Daraja "
        "has no record of (a duplicate to Daraja if the first send arrived)",
    )
    refund_partial: Literal["allow", "deny"] = Field(
        "deny",
        description="whether a refund may reverse part of a payment (undocumented whether "
        "Daraja allows it: REFERENCE 8.7)",
    )
    balance_wait: float = Field(
        5.0,
        gt=0,
        le=60,
        description="seconds GET /v1/balance waits for Daraja's balance Result before "
        "answering with the last balance known",
    )
    webhook_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="URLs that receive signed event webhooks (comma-separated or a JSON list)",
    )
    webhook_secret: SecretStr | None = Field(
        None, description="secret that signs webhooks (Pesa-Signature); required with webhook_urls"
    )
    webhook_previous_secret: SecretStr | None = Field(
        None,
        description="old secret, also signed with during a rotation so that receivers "
        "not yet updated still verify",
    )
    webhook_max_attempts: int = Field(
        12, ge=1, description="delivery attempts per event and endpoint before giving up"
    )
    webhook_timeout: float = Field(
        10.0, gt=0, description="seconds a webhook receiver has to answer"
    )
    webhook_backoff_base: float = Field(
        10.0, gt=0, description="seconds before the first webhook retry; doubles each retry"
    )
    webhook_backoff_cap: float = Field(
        3600.0, gt=0, description="longest wait, in seconds, between webhook retries"
    )
    webhook_batch_size: int = Field(50, ge=1, description="deliveries claimed per dispatcher round")
    webhook_concurrency: int = Field(
        8,
        ge=1,
        description="webhook deliveries in flight at once per endpoint and process "
        "(each endpoint has its own lane: a slow receiver delays only itself)",
    )
    webhook_lease: float = Field(
        60.0,
        gt=0,
        description="seconds a claimed delivery stays reserved to one dispatcher; "
        "must exceed webhook_timeout",
    )
    webhook_interval: float = Field(
        1.0,
        gt=0,
        description="seconds between polls of the event outbox when it is empty (the "
        "safety net: a commit that writes deliveries wakes the dispatcher at once)",
    )
    webhook_notify: bool = Field(
        True,
        description="on PostgreSQL, commits that write webhook deliveries send NOTIFY "
        "pesa_outbox and dispatchers LISTEN for it, so a worker in another process wakes "
        "at once instead of at its next poll",
    )

    @field_validator("webhook_urls", mode="before")
    @classmethod
    def _split_webhook_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("webhook_urls")
    @classmethod
    def _check_webhook_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"webhook URL must be an absolute http(s) URL: {url!r}")
        return value

    @model_validator(mode="after")
    def _check_workers(self) -> Settings:
        if self.reconcile_recheck_cap < self.reconcile_recheck_interval:
            raise ValueError("reconcile_recheck_cap must be at least reconcile_recheck_interval")
        if self.reconcile_backoff_cap < self.reconcile_backoff_base:
            raise ValueError("reconcile_backoff_cap must be at least reconcile_backoff_base")
        if self.webhook_backoff_cap < self.webhook_backoff_base:
            raise ValueError("webhook_backoff_cap must be at least webhook_backoff_base")
        if self.webhook_lease <= self.webhook_timeout:
            raise ValueError("webhook_lease must be longer than webhook_timeout")
        if self.reconcile_lease <= self.timeout:
            raise ValueError("reconcile_lease must be longer than timeout (one STK query)")
        if self.c2b_validation == "http" and not self.c2b_validation_url:
            raise ValueError("c2b_validation_url is required when c2b_validation is http")
        if self.c2b_validation_url is not None:
            parts = urlsplit(self.c2b_validation_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError("c2b_validation_url must be an absolute http(s) URL")
        if self.webhook_urls and self.webhook_secret is None:
            raise ValueError("webhook_secret is required when webhook_urls is set")
        return self

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except PydanticValidationError as err:
            raise configuration_error(err) from None

    def require_all(self, *names: str) -> None:
        """Check that every setting in ``names`` is set; report all the missing ones at once.

        Raises:
            ConfigurationError: naming each missing ``PESA_*`` variable.
        """
        missing = [n for n in names if getattr(self, n) is None or getattr(self, n) == ""]
        if len(missing) == 1:
            self.require(missing[0])
        if missing:
            variables = ", ".join(f"PESA_{n.upper()}" for n in missing)
            raise ConfigurationError(f"{len(missing)} settings are required: set {variables}")

    def require(self, name: str) -> str:
        """Return setting ``name`` as a plain string, or raise naming its variable."""
        value = getattr(self, name)
        if value is None or value == "":
            raise ConfigurationError(
                f"{name} is required: set PESA_{name.upper()} or pass {name}=..."
            )
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        return str(value)


def default_of(name: str) -> Any:
    """The default of setting ``name``: the one place each default is written.

    The options dataclasses (``ReconcilerOptions``, ``TransferOptions``) default to these,
    so that a worker built without settings paces itself as one built from them.
    """
    return Settings.model_fields[name].get_default(call_default_factory=True)
