"""``POST /v1/payments/{id}/refresh`` when Daraja rate limits, fails or cannot be reached."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from pesa import DarajaError, RateLimitError, ServerError, TransportError
from pesa.client import AsyncDaraja
from pesa.daraja import StkQueryResponse
from pesa.ledger import Ledger, PaymentStatus
from pesa.testing import run_gateway

from .conftest import API_KEY, gateway_settings


class FailingDaraja(AsyncDaraja):
    """A client whose STK query raises the error a test sets (no network at all)."""

    error: BaseException = RuntimeError("set by the test")

    async def stk_query(
        self, checkout_request_id: str, *, timeout: float | None = None
    ) -> StkQueryResponse:
        del checkout_request_id, timeout
        raise self.error


def _transport_error(cause: Exception) -> TransportError:
    error = TransportError(f"stk_query: {type(cause).__name__}: no answer")
    error.__cause__ = cause
    return error


@pytest.fixture
async def refresh(sqlite_url: str) -> AsyncIterator[tuple[FailingDaraja, httpx.AsyncClient, str]]:
    """A gateway whose Daraja client fails, and one pending payment in its ledger."""
    client = FailingDaraja(
        environment="emulator",
        base_url="http://127.0.0.1:9",
        consumer_key="key",
        consumer_secret="secret",
        shortcode=174379,
        passkey="passkey",
    )
    settings = gateway_settings(sqlite_url, run_workers=False)
    with run_gateway(settings, client=client) as gateway:
        ledger = await Ledger.open(sqlite_url)
        try:
            payment, _ = await ledger.create_payment(None, "254708374149", 10, "INV1", "Order")
            await ledger.mark_accepted(payment.id, "ws_CO_refresh", "29115-1")
        finally:
            await ledger.close()
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=gateway.url, headers=headers, timeout=10) as api:
            yield client, api, payment.id
    await client.aclose()


async def _refresh(
    setup: tuple[FailingDaraja, httpx.AsyncClient, str], error: BaseException
) -> httpx.Response:
    client, api, payment_id = setup
    client.error = error
    response = await api.post(f"/v1/payments/{payment_id}/refresh")
    unchanged = await api.get(f"/v1/payments/{payment_id}")
    assert unchanged.json()["status"] == PaymentStatus.PENDING
    return response


async def test_spike_arrest_is_503_with_retry_after(
    refresh: tuple[FailingDaraja, httpx.AsyncClient, str],
) -> None:
    error = RateLimitError(429, "500.003.02", "Spike arrest violation")
    response = await _refresh(refresh, error)
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1
    body = response.json()["error"]
    assert body["type"] == "daraja_rate_limited"
    assert "retry after" in body["message"]


async def test_unreachable_daraja_is_502(
    refresh: tuple[FailingDaraja, httpx.AsyncClient, str],
) -> None:
    response = await _refresh(refresh, _transport_error(httpx.ConnectError("refused")))
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "daraja_unreachable"
    assert "Retry-After" not in response.headers


@pytest.mark.parametrize("cause", [httpx.ReadTimeout("slow"), TimeoutError()])
async def test_a_query_timeout_is_504(
    refresh: tuple[FailingDaraja, httpx.AsyncClient, str], cause: Exception
) -> None:
    response = await _refresh(refresh, _transport_error(cause))
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "daraja_timeout"


@pytest.mark.parametrize(
    "error",
    [
        ServerError(500, "500.001.1001", "Unable to lock subscriber"),
        DarajaError(401, "404.001.03", "Invalid Access Token"),
    ],
)
async def test_other_daraja_errors_are_502_naming_the_code(
    refresh: tuple[FailingDaraja, httpx.AsyncClient, str], error: DarajaError
) -> None:
    response = await _refresh(refresh, error)
    assert response.status_code == 502
    body = response.json()["error"]
    assert body["type"] == "daraja_error"
    assert error.error_code is not None and error.error_code in body["message"]
