"""The one settings object of pesa, read from ``PESA_*`` variables (and a ``.env`` file).

Only the CLI and the application factories build a :class:`Settings`; nothing below them
reads ``os.environ``. Constructor arguments beat the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pesa._constants import (
    DEFAULT_CALLBACK_ALLOWED_IPS,
    DEFAULT_DATABASE_URL,
    DEFAULT_ENVIRONMENT,
    DEFAULT_GATEWAY_HOST,
    DEFAULT_GATEWAY_PORT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    Environment,
)
from pesa._exceptions import ConfigurationError

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Every setting of pesa. Each field ``x`` is read from ``PESA_X``."""

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
    consumer_key: SecretStr | None = None
    consumer_secret: SecretStr | None = None
    shortcode: str | None = Field(None, description="PayBill / HO number (BusinessShortCode)")
    passkey: SecretStr | None = Field(None, description="Lipa Na M-Pesa Online passkey")
    till: str | None = Field(None, description="till number for Buy Goods STK pushes (PartyB)")
    initiator_name: str | None = None
    initiator_password: SecretStr | None = None
    certificate_path: Path | None = Field(
        None, description="PEM/DER certificate to encrypt the SecurityCredential with"
    )
    callback_url: str | None = Field(None, description="default STK CallBackURL")
    result_url: str | None = Field(None, description="default ResultURL for initiator APIs")
    timeout_url: str | None = Field(None, description="default QueueTimeOutURL")
    timeout: float = Field(DEFAULT_TIMEOUT, gt=0, description="seconds per HTTP request")
    max_retries: int = Field(DEFAULT_MAX_RETRIES, ge=0, description="retries of safe requests")
    rate_limit: float | None = Field(None, gt=0, description="requests per second, per client")
    log: str = Field("warning", description="log level of the pesa logger")

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
        description="comma-separated IPs/CIDRs Daraja calls back from (REFERENCE §11 list)",
    )
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="comma-separated IPs/CIDRs of proxies whose X-Forwarded-For is believed",
    )
    run_workers: bool = Field(
        True, description="run the reconciler and webhook dispatcher inside `pesa serve`"
    )
    auto_migrate: bool = Field(
        True, description="apply database migrations when `pesa serve` starts"
    )

    @field_validator("callback_allowed_ips", "trusted_proxies", mode="before")
    @classmethod
    def _split_comma_list(cls, value: Any) -> Any:
        # Environment variables are plain text: "1.2.3.4, 10.0.0.0/8" becomes a tuple.
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

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
