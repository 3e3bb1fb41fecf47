"""The pure parts: retry decisions, Retry-After, pacing, and building clients from settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from pesa import (
    AsyncDaraja,
    BadRequestError,
    ConfigurationError,
    Daraja,
    RateLimitError,
    ServerError,
    Settings,
    ValidationError,
)
from pesa._constants import BASE_URLS
from pesa.client import FileTokenStore, RateLimiter, RetryPolicy, should_retry
from pesa.client._base import redact_body
from pesa.client._retry import classify_transport_error, parse_retry_after
from pesa.testing import FrozenClock

POLICY = RetryPolicy(max_retries=2, base_delay=1.0, max_delay=10.0)
SPIKE = RateLimitError(500, "500.003.02", "Spike Arrest Violation")


@pytest.mark.parametrize(
    ("moves_money", "failure", "attempt", "retry"),
    [
        (True, "not_sent", 1, True),
        (True, "maybe_sent", 1, False),
        (True, SPIKE, 1, False),
        (True, ServerError(500, None, "boom"), 1, False),
        (False, "maybe_sent", 1, True),
        (False, SPIKE, 1, True),
        (False, ServerError(503, None, "down"), 2, True),
        (False, ServerError(503, None, "down"), 3, False),
        (False, BadRequestError(400, "400.002.02", "Invalid Amount"), 1, False),
        (True, "not_sent", 3, False),
    ],
)
def test_should_retry_table(moves_money: bool, failure: object, attempt: int, retry: bool) -> None:
    decision = should_retry(
        operation="op",
        moves_money=moves_money,
        failure=failure,  # type: ignore[arg-type]
        attempt=attempt,
        policy=POLICY,
    )
    assert decision.retry is retry
    assert decision.reason.startswith("op:")


def test_transport_errors_are_classified_by_whether_they_left() -> None:
    push = httpx.Request("POST", "https://x/mpesa/stkpush/v1/processrequest")
    oauth = httpx.Request("GET", "https://x/oauth/v1/generate")
    assert classify_transport_error(httpx.ConnectError("x", request=push)) == "not_sent"
    assert classify_transport_error(httpx.PoolTimeout("x", request=push)) == "not_sent"
    assert classify_transport_error(httpx.ReadTimeout("x", request=push)) == "maybe_sent"
    assert classify_transport_error(httpx.ReadTimeout("x", request=oauth)) == "not_sent"


def test_backoff_grows_is_capped_and_honours_retry_after() -> None:
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (10, 10.0)]:
        delay = POLICY.delay(attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert POLICY.delay(1, retry_after=7.0) == 7.0
    assert POLICY.delay(1, retry_after=60.0) == 10.0
    assert RetryPolicy(base_delay=0, max_delay=0).delay(3) == 0.0


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=12)), now=now) == 12.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("-5") == 0.0


def test_rate_limiter_spaces_slots_evenly() -> None:
    clock = FrozenClock()
    limiter = RateLimiter(4, clock=clock)
    assert [limiter.reserve() for _ in range(4)] == [0.0, 0.25, 0.5, 0.75]
    clock.advance(2)
    assert limiter.reserve() == 0.0


@pytest.mark.parametrize("rate", [0, -1, True, "5"])
def test_rate_limiter_rejects_bad_rates(rate: object) -> None:
    with pytest.raises(ValidationError, match="rate_limit"):
        RateLimiter(rate)  # type: ignore[arg-type]


def test_redact_body() -> None:
    body = {"Password": "p", "SecurityCredential": "c", "Amount": 1}
    assert redact_body(body) == {
        "Password": "[redacted]",
        "SecurityCredential": "[redacted]",
        "Amount": 1,
    }


@pytest.mark.parametrize("cls", [Daraja, AsyncDaraja])
def test_default_environment_is_the_emulator_never_production(cls: type[Daraja]) -> None:
    client = cls()
    assert client.environment == "emulator"
    assert client._http.base_url == BASE_URLS["emulator"]
    assert client.base_url == BASE_URLS["emulator"]
    assert "production" not in repr(client)


@pytest.mark.parametrize(
    ("kwargs", "variable"),
    [
        ({"environment": "live"}, "PESA_ENV"),
        ({"base_url": "api.safaricom.co.ke"}, "PESA_BASE_URL"),
        ({"timeout": 0}, "PESA_TIMEOUT"),
        ({"max_retries": -1}, "PESA_MAX_RETRIES"),
    ],
)
def test_bad_configuration_names_the_variable(kwargs: dict[str, object], variable: str) -> None:
    with pytest.raises(ConfigurationError, match=variable):
        Daraja(**kwargs)  # type: ignore[arg-type]


def test_base_url_override_and_environments() -> None:
    assert Daraja(environment="sandbox").base_url == "https://sandbox.safaricom.co.ke"
    assert Daraja(environment="production").base_url == "https://api.safaricom.co.ke"
    assert Daraja(base_url="http://127.0.0.1:9999/").base_url == "http://127.0.0.1:9999"


def test_from_settings_maps_every_client_field(tmp_path: Path) -> None:
    settings = Settings(
        env="sandbox",
        consumer_key="k",
        consumer_secret="s",
        shortcode="174379",
        passkey="pk",
        till="5123456",
        initiator_name="testapi",
        initiator_password="pw",
        certificate_path=tmp_path / "c.pem",
        callback_url="https://e.com/cb",
        result_url="https://e.com/r",
        timeout_url="https://e.com/t",
        timeout=12.5,
        max_retries=4,
        rate_limit=3,
        token_cache_path=tmp_path / "tokens.json",
    )
    client = Daraja.from_settings(settings, shortcode="600000")
    assert client.environment == "sandbox"
    assert client.shortcode == "600000"  # keyword arguments win
    assert client.till == "5123456"
    assert client.consumer_key == "k"
    assert client.certificate_path == tmp_path / "c.pem"
    assert client.timeout == 12.5
    assert client.retry_policy.max_retries == 4
    assert client.rate_limiter is not None and client.rate_limiter.rate == 3
    assert isinstance(client.token_store, FileTokenStore)
    assert "pk" not in repr(client) and "pw" not in repr(client)


def test_from_env_reads_pesa_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PESA_ENV", "sandbox")
    monkeypatch.setenv("PESA_SHORTCODE", "174379")
    monkeypatch.setenv("PESA_CALLBACK_URL", "https://e.com/cb")
    client = AsyncDaraja.from_env()
    assert client.environment == "sandbox"
    assert client.shortcode == "174379"
    assert client.callback_url == "https://e.com/cb"


async def test_async_context_manager_closes_the_pool() -> None:
    async with AsyncDaraja() as client:
        pass
    assert client._http.is_closed


def test_sync_context_manager_closes_the_pool() -> None:
    with Daraja() as client:
        pass
    assert client._http.is_closed
