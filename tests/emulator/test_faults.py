"""Injected faults, the per-app rate limit, latency, and seeded determinism (in-process)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest

from pesa.emulator import Emulator, EmulatorConfig, Fault
from pesa.emulator._stk import MpesaExpress

BALANCE = "/mpesa/accountbalance/v1/query"
OAUTH = "/oauth/v1/generate?grant_type=client_credentials"


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(seed=11)) as emulator:
        yield emulator


async def _post(
    emulator: Emulator, token: str | None = None, path: str = BALANCE
) -> httpx.Response:
    token = token or emulator.issue_token()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(emulator.app), base_url="http://d"
    ) as http:
        return await http.post(path, json={}, headers={"Authorization": f"Bearer {token}"})


async def test_http_500_fault_answers_internal_server_error(emulator: Emulator) -> None:
    emulator.add_fault(kind="http_500")
    response = await _post(emulator)
    assert response.status_code == 500
    assert response.json()["errorCode"] == "500.003.1001"
    assert response.json()["errorMessage"] == "Internal Server Error"


async def test_http_503_fault_is_plain_text_from_the_load_balancer(emulator: Emulator) -> None:
    emulator.add_fault(kind="http_503")
    response = await _post(emulator)
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/plain")


async def test_spike_arrest_fault(emulator: Emulator) -> None:
    emulator.add_fault(Fault(kind="spike_arrest", path="/mpesa/accountbalance"))
    response = await _post(emulator)
    assert response.status_code == 500
    assert response.json()["errorCode"] == "500.003.02"
    assert response.json()["errorMessage"] == "Error Occurred: Spike Arrest Violation"
    other = await _post(emulator, path="/mpesa/reversal/v1/request")
    assert other.status_code == 400  # the fault is limited to its path


async def test_invalid_token_fault_refuses_a_good_token(emulator: Emulator) -> None:
    emulator.add_fault(kind="invalid_token", times=1)
    token = emulator.issue_token()
    first = await _post(emulator, token)
    second = await _post(emulator, token)
    assert first.status_code == 404
    assert first.json()["errorCode"] == "404.001.03"
    assert second.status_code == 400  # the fault was used up; the token was fine all along


async def test_slow_fault_delays_the_answer(emulator: Emulator) -> None:
    emulator.add_fault(kind="slow", delay=0.3)
    started = time.monotonic()
    response = await _post(emulator)
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 400


async def test_fault_rate_affects_a_share_of_requests(emulator: Emulator) -> None:
    emulator.add_fault(kind="http_500", rate=0.5)
    token = emulator.issue_token()
    statuses = [(await _post(emulator, token)).status_code for _ in range(200)]
    failed = statuses.count(500)
    assert 60 < failed < 140
    assert set(statuses) == {400, 500}


async def test_removing_and_clearing_faults(emulator: Emulator) -> None:
    fault = emulator.add_fault(kind="http_500")
    assert emulator.faults == [fault]
    assert emulator.remove_fault(fault.id)
    assert not emulator.remove_fault(fault.id)
    emulator.add_fault(kind="http_503")
    emulator.clear_faults()
    assert (await _post(emulator)).status_code == 400


async def test_oauth_is_spared_by_invalid_token_faults_but_not_by_500(emulator: Emulator) -> None:
    emulator.add_fault(kind="invalid_token")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(emulator.app), base_url="http://d"
    ) as http:
        assert (await http.get(OAUTH, auth=("k", "s"))).status_code == 200
        emulator.add_fault(kind="http_500")
        assert (await http.get(OAUTH, auth=("k", "s"))).status_code == 500


async def test_rate_limit_per_app_answers_spike_arrest(emulator: Emulator) -> None:
    token = emulator.issue_token("app-a")
    emulator.set_rate_limit(3)
    statuses = [(await _post(emulator, token)).status_code for _ in range(6)]
    assert statuses[:3] == [400, 400, 400]
    assert 500 in statuses[3:]
    refused = await _post(emulator, token)
    assert refused.json()["errorCode"] == "500.003.02"
    # Another app has its own budget.
    other = emulator.issue_token("app-b")
    assert (await _post(emulator, other)).status_code == 400
    emulator.set_rate_limit(None)
    assert (await _post(emulator, token)).status_code == 400


def test_rate_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="requests_per_second"):
        Emulator().set_rate_limit(0)


async def test_latency_is_added_to_every_response() -> None:
    async with Emulator(EmulatorConfig(latency_ms=200)) as emulator:
        started = time.monotonic()
        await _post(emulator)
        assert time.monotonic() - started >= 0.2


async def test_same_seed_same_ids() -> None:
    async def ids(seed: int) -> list[str]:
        async with Emulator(EmulatorConfig(seed=seed, result_delay=0)) as emulator:
            token = emulator.issue_token()
            out = [token]
            body = {
                "InitiatorName": "testapi",
                "SecurityCredential": "A" * 344,
                "CommandID": "BusinessPayment",
                "Amount": 10,
                "PartyA": "600997",
                "PartyB": "254708374149",
                "Remarks": "ok",
                "QueueTimeOutURL": "http://127.0.0.1:9/t",
                "ResultURL": "http://127.0.0.1:9/r",
            }
            for _ in range(3):
                response = await _post(emulator, token, "/mpesa/b2c/v1/paymentrequest")
                assert response.status_code == 400
                async with httpx.AsyncClient(
                    transport=httpx.ASGITransport(emulator.app), base_url="http://d"
                ) as http:
                    ack = await http.post(
                        "/mpesa/b2c/v1/paymentrequest",
                        json=body,
                        headers={"Authorization": f"Bearer {token}"},
                    )
                out += [ack.json()["OriginatorConversationID"], ack.json()["ConversationID"][12:]]
            await emulator.reset()
            return out

    assert await ids(5) == await ids(5)
    assert await ids(5) != await ids(6)


async def test_finished_payments_are_forgotten_beyond_the_bound() -> None:
    """Memory stays bounded under load: only the last max_records * 10 payments are kept."""
    from .conftest import stk_password, stk_timestamp

    async with Emulator(EmulatorConfig(stk_delay=0, max_records=1)) as emulator:
        token = emulator.issue_token()
        ids = []
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(emulator.app), base_url="http://d"
        ) as http:
            for n in range(12):
                ts = stk_timestamp()
                body = {
                    "BusinessShortCode": "174379",
                    "Password": stk_password(ts),
                    "Timestamp": ts,
                    "TransactionType": "CustomerBuyGoodsOnline",
                    "Amount": 1,
                    "PartyA": f"25471100{n:04d}",
                    "PartyB": "174379",
                    "PhoneNumber": f"25471100{n:04d}",
                    "CallBackURL": "http://127.0.0.1:9/cb",
                }
                headers = {"Authorization": f"Bearer {token}"}
                ack = await http.post(
                    "/mpesa/stkpush/v1/processrequest", json=body, headers=headers
                )
                ids.append(ack.json()["CheckoutRequestID"])
                assert await emulator.wait_idle()
            assert len(emulator.product(MpesaExpress).sessions) <= 11
            ts = stk_timestamp()
            query = {"BusinessShortCode": "174379", "Password": stk_password(ts), "Timestamp": ts}
            first = await http.post(
                "/mpesa/stkpushquery/v1/query",
                json={**query, "CheckoutRequestID": ids[0]},
                headers=headers,
            )
            last = await http.post(
                "/mpesa/stkpushquery/v1/query",
                json={**query, "CheckoutRequestID": ids[-1]},
                headers=headers,
            )
        assert first.status_code == 400
        assert last.status_code == 200


async def test_control_api_is_spared_by_faults_and_the_rate_limit(emulator: Emulator) -> None:
    emulator.add_fault(kind="http_503")
    emulator.set_rate_limit(1)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(emulator.app), base_url="http://d"
    ) as http:
        statuses = {(await http.get("/__emulator__/health")).status_code for _ in range(5)}
    assert statuses == {200}


async def test_stop_cancels_pending_customers() -> None:
    from .conftest import stk_password, stk_timestamp

    emulator = Emulator(EmulatorConfig(stk_delay=60))
    await emulator.start()
    token = emulator.issue_token()
    ts = stk_timestamp()
    body = {
        "BusinessShortCode": "174379",
        "Password": stk_password(ts),
        "Timestamp": ts,
        "TransactionType": "CustomerPayBillOnline",
        "Amount": 1,
        "PartyA": "254711000999",
        "PartyB": "174379",
        "PhoneNumber": "254711000999",
        "CallBackURL": "http://127.0.0.1:9/cb",
        "AccountReference": "A",
    }
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(emulator.app), base_url="http://d"
    ) as http:
        ack = await http.post(
            "/mpesa/stkpush/v1/processrequest",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )
    assert ack.status_code == 200
    assert not await emulator.wait_idle(0.05)
    await emulator.stop()
    assert await emulator.wait_idle(0)
    assert emulator.callbacks() == []


async def test_injected_clock_is_the_emulators_nairobi_time() -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from pesa.testing import FrozenClock

    from .conftest import stk_password

    frozen = datetime(2024, 7, 6, 22, 48, 52, tzinfo=ZoneInfo("Africa/Nairobi"))
    clock = FrozenClock(frozen)
    async with Emulator(EmulatorConfig(stk_delay=0), clock=clock) as emulator:
        token = emulator.issue_token()
        ts = "20240706224852"
        body = {
            "BusinessShortCode": "174379",
            "Password": stk_password(ts),
            "Timestamp": ts,
            "TransactionType": "CustomerPayBillOnline",
            "Amount": 1,
            "PartyA": "254711000998",
            "PartyB": "174379",
            "PhoneNumber": "254711000998",
            "CallBackURL": "http://127.0.0.1:9/cb",
            "AccountReference": "A",
        }
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(emulator.app), base_url="http://d"
        ) as http:
            ack = await http.post(
                "/mpesa/stkpush/v1/processrequest",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            )
        assert ack.status_code == 200
        assert ack.json()["CheckoutRequestID"].startswith("ws_CO_06072024224852")
        assert await emulator.wait_idle()
        [callback] = emulator.callbacks("stk")
        items = callback.payload["Body"]["stkCallback"]["CallbackMetadata"]["Item"]
        receipt = next(i["Value"] for i in items if i["Name"] == "MpesaReceiptNumber")
        assert receipt.startswith("SG6")  # 2024 = S, July = G, 6th = 6, as on real receipts
