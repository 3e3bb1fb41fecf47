"""The one settings object of pesa, read from ``PESA_*`` variables (and a ``.env`` file).

Only the CLI and the application factories build a :class:`Settings`; nothing below them
reads ``os.environ``. Constructor arguments beat the environment.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from pesa._constants import (
    DEFAULT_DATABASE_URL,
    DEFAULT_EMULATOR_HOST,
    DEFAULT_EMULATOR_PORT,
    DEFAULT_ENVIRONMENT,
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
    token_cache_path: Path | None = Field(
        None, description="JSON file sharing the access token between processes (mode 0600)"
    )
    log: str = Field("warning", description="log level of the pesa logger")

    # -- Gateway --------------------------------------------------------------------------
    database_url: str = Field(DEFAULT_DATABASE_URL, description="SQLAlchemy URL of the ledger")
    api_key: SecretStr | None = Field(None, description="bearer key for the REST API")

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
