"""The REST API against a live gateway on loopback (emulator mounted, real ledger)."""

from __future__ import annotations

import json
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from pesa._clock import SYSTEM_CLOCK
from pesa.daraja import lookup_code
from pesa.emulator import Emulator
from pesa.ledger import Ledger
from pesa.testing import RunningGateway, run_gateway

from .conftest import API_KEY, gateway_settings
from .helpers import create, events_of, payment_body, wait_for


class TestAuthentication:
    async def test_missing_key_is_401_with_a_bearer_challenge(
        self, gateway: RunningGateway
    ) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as anonymous:
            response = await anonymous.get("/v1/payments")
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json()["error"]["type"] == "authentication_error"

    async def test_wrong_key_is_401(self, gateway: RunningGateway) -> None:
        headers = {"Authorization": f"Bearer {API_KEY}x"}
        async with httpx.AsyncClient(base_url=gateway.url, headers=headers) as client:
            response = await client.post("/v1/payments", json=payment_body())
        assert response.status_code == 401

    async def test_healthz_needs_no_key(self, gateway: RunningGateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as anonymous:
            response = await anonymous.get("/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok", "database": "ok", "environment": "emulator"}

    async def test_openapi_docs_are_served(self, gateway: RunningGateway) -> None:
        async with httpx.AsyncClient(base_url=gateway.url) as anonymous:
            spec = (await anonymous.get("/openapi.json")).json()
            docs = await anonymous.get("/docs")
        assert docs.status_code == 200
        assert "/v1/payments" in spec["paths"]
        assert not any(path.startswith("/callbacks") for path in spec["paths"])


class TestCreatePayment:
    async def test_success_goes_pending_then_succeeded_with_receipt(
        self, api: httpx.AsyncClient
    ) -> None:
        payment = await create(api, "0708374149", 25, metadata={"order": 42})
        assert payment["status"] == "pending"
        assert payment["phone"] == "254708374149"
        assert payment["checkout_request_id"].startswith("ws_CO_")
        assert payment["metadata"] == {"order": 42}
        final = await wait_for(api, payment["id"])
        assert final["status"] == "succeeded"
        assert final["result_code"] == "0"
        assert final["receipt"]
        assert not final["flagged"]
        types = [e["type"] for e in await events_of(api, payment["id"], at_least=2)]
        assert types == ["payment.pending", "payment.succeeded"]

    @pytest.mark.parametrize(
        ("phone", "code"),
        [("254700001032", "1032"), ("254700000001", "1"), ("254700001037", "1037")],
    )
    async def test_customer_refusals_fail_with_the_result_code(
        self, api: httpx.AsyncClient, phone: str, code: str
    ) -> None:
        payment = await create(api, phone)
        final = await wait_for(api, payment["id"])
        assert final["status"] == "failed"
        assert final["result_code"] == code
        assert final["failure_reason"] == lookup_code(code).meaning
        assert final["receipt"] is None

    async def test_refused_push_is_rejected_with_darajas_code(self, api: httpx.AsyncClient) -> None:
        """254700001001: the subscriber is busy, Daraja refuses the push synchronously."""
        payment = await create(api, "254700001001")
        assert payment["status"] == "rejected"
        assert payment["result_code"] == "500.001.1001"
        assert payment["checkout_request_id"] is None

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            (payment_body(phone="0999"), "phone"),
            (payment_body(amount=0), "amount"),
            (payment_body(amount=250_001), "amount"),
            (payment_body(amount=10.5), "amount"),
            (payment_body(amount="10"), "amount"),
            (payment_body(account_reference="A" * 13), "account_reference"),
            (payment_body(description="D" * 14), "description"),
            ({**payment_body(), "surprise": 1}, "surprise"),
            ({"phone": "254708374149", "amount": 10}, "account_reference"),
        ],
    )
    async def test_invalid_input_is_422_naming_the_field(
        self, api: httpx.AsyncClient, body: dict[str, object], field: str
    ) -> None:
        response = await api.post("/v1/payments", json=body)
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["type"] == "validation_error"
        assert error["field"] == field
        assert error["rule"]
        page = (await api.get("/v1/payments")).json()
        assert page["data"] == []

    async def test_phone_is_never_echoed_unmasked_in_errors(self, api: httpx.AsyncClient) -> None:
        response = await api.post("/v1/payments", json=payment_body(phone="25470837414999"))
        assert response.status_code == 422
        assert "25470837414999" not in response.text


class TestIdempotency:
    async def test_retry_returns_the_same_payment_and_pushes_once(
        self, api: httpx.AsyncClient, emulator: Emulator
    ) -> None:
        body = payment_body("254711000001", 30)
        headers = {"Idempotency-Key": "order-1001"}
        first = await api.post("/v1/payments", json=body, headers=headers)
        second = await api.post("/v1/payments", json=body, headers=headers)
        assert first.status_code == second.status_code == 201
        assert second.headers["Idempotent-Replayed"] == "true"
        assert "Idempotent-Replayed" not in first.headers
        assert first.json()["id"] == second.json()["id"]
        pushes = _stk_pushes(emulator, "254711000001")
        assert pushes == 1
        page = (await api.get("/v1/payments", params={"phone": "0711000001"})).json()
        assert len(page["data"]) == 1

    async def test_same_key_with_other_parameters_is_409(self, api: httpx.AsyncClient) -> None:
        headers = {"Idempotency-Key": "order-1002"}
        ok = await api.post("/v1/payments", json=payment_body(amount=10), headers=headers)
        assert ok.status_code == 201
        clash = await api.post("/v1/payments", json=payment_body(amount=11), headers=headers)
        assert clash.status_code == 409
        assert clash.json()["error"]["type"] == "idempotency_conflict"

    async def test_without_a_key_every_request_is_a_new_payment(
        self, api: httpx.AsyncClient
    ) -> None:
        a = await api.post("/v1/payments", json=payment_body("254711000003"))
        b = await api.post("/v1/payments", json=payment_body("254711000004"))
        assert a.json()["id"] != b.json()["id"]

    async def test_overlong_key_is_422(self, api: httpx.AsyncClient) -> None:
        response = await api.post(
            "/v1/payments", json=payment_body(), headers={"Idempotency-Key": "k" * 256}
        )
        assert response.status_code == 422
        assert response.json()["error"]["field"] == "Idempotency-Key"


def _stk_pushes(emulator: Emulator, phone: str) -> int:
    return sum(
        1
        for r in emulator.requests("/mpesa/stkpush/v1/processrequest")
        if str(r.body.get("PhoneNumber")) == phone
    )


class TestReads:
    async def test_get_unknown_payment_is_404(self, api: httpx.AsyncClient) -> None:
        response = await api.get("/v1/payments/pay_nope")
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found"

    async def test_list_filters_and_paginates(self, api: httpx.AsyncClient) -> None:
        ids = [(await create(api, f"25471100010{i}"))["id"] for i in range(3)]
        rejected = await create(api, "254700001001")
        first = (await api.get("/v1/payments", params={"limit": 2})).json()
        assert len(first["data"]) == 2
        assert first["next_cursor"]
        rest = (
            await api.get("/v1/payments", params={"limit": 2, "cursor": first["next_cursor"]})
        ).json()
        seen = {p["id"] for p in first["data"]} | {p["id"] for p in rest["data"]}
        assert seen == {*ids, rejected["id"]}
        only = (await api.get("/v1/payments", params={"status": "rejected"})).json()
        assert [p["id"] for p in only["data"]] == [rejected["id"]]
        bad = await api.get("/v1/payments", params={"status": "paid"})
        assert bad.status_code == 422
        assert bad.json()["error"]["field"] == "status"

    async def test_refresh_queries_daraja_now(self, api: httpx.AsyncClient) -> None:
        payment = await create(api, "254700000404")
        await wait_for(api, payment["id"], {"succeeded"}, timeout=15)
        refreshed = await api.post(f"/v1/payments/{payment['id']}/refresh")
        assert refreshed.status_code == 200
        assert refreshed.json()["status"] == "succeeded"

    async def test_metrics_render_prometheus_text(self, api: httpx.AsyncClient) -> None:
        await create(api, "254700001001")
        response = await api.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert 'pesa_payments{status="rejected"} 1' in response.text


class _DownEngine:
    dialect = SimpleNamespace(name="sqlite")

    def connect(self) -> Any:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("db down"))


class _DownLedger:
    """A ledger whose database does not answer."""

    webhook_endpoints: tuple[str, ...] = ()
    engine = _DownEngine()
    clock = SYSTEM_CLOCK

    def __getattr__(self, name: str) -> Any:
        async def fail(*_: Any, **__: Any) -> Any:
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("db down"))

        return fail


async def test_database_outage_is_503_in_the_error_shape(sqlite_url: str) -> None:
    settings = gateway_settings(sqlite_url, run_workers=False)
    with run_gateway(settings, ledger=_DownLedger()) as gateway:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=gateway.url, headers=headers) as client:
            response = await client.get("/v1/payments/pay_x")
            health = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "service_unavailable"
    assert health.status_code == 503
    assert health.json()["database"] == "unavailable"


async def test_events_in_the_api_are_the_webhook_bodies(
    api: httpx.AsyncClient, ledger: Ledger
) -> None:
    payment = await create(api, "254711555001")
    await wait_for(api, payment["id"], {"succeeded"})
    listed = await events_of(api, payment["id"], at_least=2)
    stored = (await ledger.list_events(payment_id=payment["id"])).items
    assert listed == [json.loads(e.payload) for e in stored][: len(listed)]
    final = (await api.get(f"/v1/payments/{payment['id']}")).json()
    in_event = dict(listed[-1]["data"]["payment"])
    # The same instant, written with Nairobi's offset in the event and UTC when read back.
    when = datetime.fromisoformat(in_event.pop("transaction_date"))
    assert when == datetime.fromisoformat(final.pop("transaction_date"))
    assert in_event == final


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"null", b""])
async def test_a_body_that_is_not_a_json_object_is_422(api: httpx.AsyncClient, body: bytes) -> None:
    response = await api.post(
        "/v1/payments", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "validation_error"
    assert error["field"] is None
