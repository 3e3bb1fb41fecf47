"""The create flow: intent first, one push, and each Daraja answer mapped to a status."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from pesa import (
    BadRequestError,
    ConfigurationError,
    OutcomeUnknownError,
    RateLimitError,
    ServerError,
    Settings,
    TransportError,
    ValidationError,
)
from pesa.daraja import StkPushResponse
from pesa.gateway import check_settings
from pesa.gateway._app import gateway_urls
from pesa.gateway._payments import PaymentCreator, PaymentRequest, validate_idempotency_key
from pesa.ledger import IdempotencyConflictError, Ledger

CALLBACK = "http://127.0.0.1:9/callbacks/t/stk"


class FakeClient:
    """Stands in for AsyncDaraja.stk_push: records calls, answers or raises as told."""

    def __init__(self, outcome: Exception | None = None, delay: float = 0.0) -> None:
        self.outcome = outcome
        self.delay = delay
        self.calls: list[dict[str, Any]] = []

    async def stk_push(self, *args: Any, **kwargs: Any) -> StkPushResponse:
        self.calls.append({"args": args, **kwargs})
        if self.delay:
            await anyio.sleep(self.delay)
        if self.outcome is not None:
            raise self.outcome
        return StkPushResponse.model_validate(
            {
                "MerchantRequestID": "29115-34620561-1",
                "CheckoutRequestID": f"ws_CO_{len(self.calls):04d}",
                "ResponseCode": "0",
                "ResponseDescription": "Success. Request accepted for processing",
                "CustomerMessage": "Success. Request accepted for processing",
            }
        )


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    opened = await Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}")
    await opened.migrate()
    try:
        yield opened
    finally:
        await opened.close()


def request(phone: str = "0708374149", amount: int = 10) -> PaymentRequest:
    return PaymentRequest.validate(
        phone=phone, amount=amount, account_reference="INV1", description="Order"
    )


class TestCreate:
    async def test_accepted_push_is_pending_with_darajas_ids(self, ledger: Ledger) -> None:
        client = FakeClient()
        creator = PaymentCreator(ledger, client, callback_url=CALLBACK)  # type: ignore[arg-type]
        payment, created = await creator.create(request(), idempotency_key="k1")
        assert created
        assert payment.status == "pending"
        assert payment.checkout_request_id == "ws_CO_0001"
        assert client.calls[0]["callback_url"] == CALLBACK
        assert client.calls[0]["args"][:2] == ("254708374149", 10)

    async def test_repeat_with_same_key_pushes_once(self, ledger: Ledger) -> None:
        client = FakeClient()
        creator = PaymentCreator(ledger, client, callback_url=CALLBACK)  # type: ignore[arg-type]
        first, _ = await creator.create(request(), idempotency_key="k1")
        second, created = await creator.create(request(), idempotency_key="k1")
        assert not created
        assert second.id == first.id
        assert len(client.calls) == 1

    async def test_concurrent_repeats_push_once(self, ledger: Ledger) -> None:
        """Two requests with one key racing: one intent, one push, both see the same id."""
        client = FakeClient(delay=0.05)
        creator = PaymentCreator(ledger, client, callback_url=CALLBACK)  # type: ignore[arg-type]
        ids: list[str] = []

        async def attempt() -> None:
            payment, _ = await creator.create(request(), idempotency_key="race")
            ids.append(payment.id)

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(attempt)
        assert len(set(ids)) == 1
        assert len(client.calls) == 1

    async def test_same_key_other_parameters_conflicts_without_a_push(self, ledger: Ledger) -> None:
        client = FakeClient()
        creator = PaymentCreator(ledger, client, callback_url=CALLBACK)  # type: ignore[arg-type]
        await creator.create(request(amount=10), idempotency_key="k1")
        with pytest.raises(IdempotencyConflictError):
            await creator.create(request(amount=11), idempotency_key="k1")
        assert len(client.calls) == 1

    @pytest.mark.parametrize(
        ("error", "status", "code"),
        [
            (
                BadRequestError(400, "400.002.02", "Bad Request - Invalid PhoneNumber"),
                "rejected",
                "400.002.02",
            ),
            (
                ServerError(500, "500.001.1001", "Unable to lock subscriber, a transaction is"),
                "rejected",
                "500.001.1001",
            ),
            (ServerError(500, "500.001.1001", "Wrong credentials"), "rejected", "500.001.1001"),
            (ServerError(500, "500.001.1001", "Internal Server Error"), "unknown", None),
            (RateLimitError(500, "500.003.02", "Spike Arrest Violation"), "rejected", "500.003.02"),
            (TransportError("connection refused"), "rejected", "connection_error"),
            (ValidationError("amount", "too big"), "rejected", "validation_error"),
            (ConfigurationError("shortcode is required"), "rejected", "configuration_error"),
            (OutcomeUnknownError("stk_push", {}, "read timeout"), "unknown", None),
            (ServerError(500, "500.003.1001", "Internal Server Error"), "unknown", None),
            (ServerError(503, None, "<html>busy</html>"), "unknown", None),
            (RuntimeError("unparseable 200"), "unknown", None),
        ],
    )
    async def test_each_answer_maps_to_a_status(
        self, ledger: Ledger, error: Exception, status: str, code: str | None
    ) -> None:
        creator = PaymentCreator(
            ledger,
            FakeClient(error),  # type: ignore[arg-type]
            callback_url=CALLBACK,
        )
        payment, _ = await creator.create(request(), idempotency_key=None)
        assert payment.status == status
        assert payment.result_code == code
        if status == "unknown":
            # Why it is unknown is kept for the operator (the reconciler settles it).
            assert payment.failure_reason

    async def test_intent_is_committed_before_the_push(self, ledger: Ledger) -> None:
        seen: list[str] = []

        class Peeking(FakeClient):
            async def stk_push(self, *args: Any, **kwargs: Any) -> StkPushResponse:
                page = await ledger.list_payments()
                seen.extend(str(p.status) for p in page.items)
                return await super().stk_push(*args, **kwargs)

        creator = PaymentCreator(ledger, Peeking(), callback_url=CALLBACK)  # type: ignore[arg-type]
        await creator.create(request(), idempotency_key="k1")
        assert seen == ["created"]


class TestValidation:
    @pytest.mark.parametrize(
        ("fields", "field"),
        [
            ({"phone": "12345"}, "phone"),
            ({"amount": 0}, "amount"),
            ({"amount": 250_001}, "amount"),
            ({"amount": 1.5}, "amount"),
            ({"account_reference": "X" * 13}, "account_reference"),
            ({"description": "D" * 14}, "description"),
            ({"metadata": {"blob": "x" * 20_000}}, "metadata"),
        ],
    )
    def test_invalid_fields_name_the_field(self, fields: dict[str, Any], field: str) -> None:
        values: dict[str, Any] = {
            "phone": "0708374149",
            "amount": 10,
            "account_reference": "INV1",
            "description": "Order",
        }
        values.update(fields)
        with pytest.raises(ValidationError) as caught:
            PaymentRequest.validate(**values)
        assert caught.value.field == field

    def test_phone_formats_are_normalised(self) -> None:
        for phone in ("0708374149", "+254708374149", "254 708 374 149", "0110123456"):
            assert request(phone).phone.startswith("254")

    def test_idempotency_key_rules(self) -> None:
        assert validate_idempotency_key(None) is None
        assert validate_idempotency_key(" order-1 ") == "order-1"
        for bad in ("", "k" * 256, "tab\tkey"):
            with pytest.raises(ValidationError):
                validate_idempotency_key(bad)


class TestStartupChecks:
    @pytest.mark.parametrize("env", ["sandbox", "production"])
    @pytest.mark.parametrize(
        "missing",
        ["api_key", "callback_token", "public_url", "consumer_key", "shortcode", "passkey"],
    )
    def test_real_environments_refuse_to_start_without(self, env: str, missing: str) -> None:
        values: dict[str, Any] = {
            "api_key": "k" * 20,
            "callback_token": "t" * 20,
            "public_url": "https://pay.example.com",
            "consumer_key": "ck",
            "consumer_secret": "cs",
            "shortcode": "174379",
            "passkey": "pk",
        }
        values[missing] = None
        settings = Settings(_env_file=None, env=env, **values)
        with pytest.raises(ConfigurationError, match=f"PESA_{missing.upper()}"):
            check_settings(settings)

    def test_production_needs_https_and_a_long_token(self) -> None:
        base: dict[str, Any] = {
            "env": "production",
            "api_key": "k" * 20,
            "consumer_key": "ck",
            "consumer_secret": "cs",
            "shortcode": "174379",
            "passkey": "pk",
        }
        plain = Settings(
            _env_file=None, public_url="http://pay.example.com", callback_token="t" * 20, **base
        )
        with pytest.raises(ConfigurationError, match="https"):
            check_settings(plain)
        short = Settings(
            _env_file=None, public_url="https://pay.example.com", callback_token="short", **base
        )
        with pytest.raises(ConfigurationError, match="16 characters"):
            check_settings(short)

    def test_emulator_needs_nothing(self) -> None:
        check_settings(Settings(_env_file=None, env="emulator"))


class TestUrls:
    def test_public_url_gives_the_callback_url(self) -> None:
        settings = Settings(_env_file=None, env="sandbox", public_url="https://pay.example.com/")
        urls = gateway_urls(settings, "tok")
        assert urls.callback == "https://pay.example.com/callbacks/tok/stk"
        assert urls.emulator is None

    def test_emulator_defaults_to_the_bind_address_and_mounts_the_emulator(self) -> None:
        settings = Settings(_env_file=None, gateway_host="0.0.0.0", gateway_port=8123)
        urls = gateway_urls(settings, "tok")
        assert urls.public == "http://127.0.0.1:8123"
        assert urls.emulator == "http://127.0.0.1:8123/emulator"
