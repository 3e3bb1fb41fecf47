"""``POST /callbacks/{token}/stk``: trust checks, raw storage, 4xx for bad input, applied once."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from pesa.emulator import AsyncEmulatorControl, Emulator, EmulatorConfig, Rule
from pesa.ledger import Ledger
from pesa.testing import RunningGateway, run_gateway, stk_callback_payload, stk_failure_payload

from .conftest import API_KEY, CALLBACK_TOKEN, gateway_settings
from .helpers import create, events_of, wait_for


async def _callback_counts(ledger: Ledger) -> dict[str, int]:
    return dict((await ledger.stats()).callbacks)


async def _post(
    gateway: RunningGateway, body: Any, *, token: str = CALLBACK_TOKEN
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with httpx.AsyncClient(base_url=gateway.url) as daraja:
        return await daraja.post(
            f"/callbacks/{token}/stk",
            content=content,
            headers={"Content-Type": "application/json"},
        )


@pytest.fixture
def silent_customer(emulator: Emulator) -> Emulator:
    """The customer never answers (for a minute): the tests play Daraja's part themselves."""
    emulator.add_rule(Rule(callback="drop", delay=60))
    return emulator


class TestTrust:
    async def test_wrong_token_is_404_and_nothing_is_stored(
        self, gateway: RunningGateway, ledger: Ledger
    ) -> None:
        response = await _post(gateway, stk_callback_payload(), token="guess")
        assert response.status_code == 404
        assert await _callback_counts(ledger) == {}

    async def test_callback_url_given_to_daraja_carries_the_token(
        self, gateway: RunningGateway
    ) -> None:
        assert gateway.callback_url == f"{gateway.url}/callbacks/{CALLBACK_TOKEN}/stk"

    async def test_enforced_allowlist_refuses_strangers_with_403_storing_nothing(
        self, sqlite_url: str, emulator: Emulator
    ) -> None:
        settings = gateway_settings(sqlite_url, callback_allowlist="enforce")
        with run_gateway(settings, emulator=emulator) as gateway:
            response = await _post(gateway, stk_callback_payload())
            assert response.status_code == 403
        async with await Ledger.open(sqlite_url) as ledger:
            assert await _callback_counts(ledger) == {}

    async def test_allowlisted_proxy_hop_is_believed_only_from_a_trusted_proxy(
        self, sqlite_url: str, emulator: Emulator
    ) -> None:
        settings = gateway_settings(
            sqlite_url,
            callback_allowlist="enforce",
            trusted_proxies=("127.0.0.1",),
        )
        with run_gateway(settings, emulator=emulator) as gateway:
            async with httpx.AsyncClient(base_url=gateway.url) as proxy:
                response = await proxy.post(
                    f"/callbacks/{CALLBACK_TOKEN}/stk",
                    json=stk_callback_payload(checkout_request_id="ws_CO_unknown"),
                    headers={"X-Forwarded-For": "196.201.214.200"},
                )
            # Past the allowlist (the proxy vouches for a Safaricom address); unknown id.
            assert response.status_code == 404
            assert response.json()["ResultCode"] == 1
        async with await Ledger.open(sqlite_url) as ledger:
            assert await _callback_counts(ledger) == {"unknown_payment": 1}

    async def test_forwarded_for_from_an_untrusted_peer_is_ignored(
        self, sqlite_url: str, emulator: Emulator
    ) -> None:
        """Loopback is not a trusted proxy unless configured: the header is not believed."""
        settings = gateway_settings(sqlite_url, callback_allowlist="enforce")
        with run_gateway(settings, emulator=emulator) as gateway:
            async with httpx.AsyncClient(base_url=gateway.url) as spoofer:
                response = await spoofer.post(
                    f"/callbacks/{CALLBACK_TOKEN}/stk",
                    json=stk_callback_payload(),
                    headers={"X-Forwarded-For": "196.201.214.200"},
                )
        assert response.status_code == 403

    async def test_oversized_body_is_413(self, gateway: RunningGateway) -> None:
        response = await _post(gateway, b"{" + b" " * 70_000 + b"}")
        assert response.status_code == 413


class TestBadCallbacks:
    @pytest.mark.parametrize(
        "body",
        [b"not json", b"[]", b'{"Body": {}}', b'{"Body": {"stkCallback": {"ResultCode": 0}}}'],
    )
    async def test_malformed_body_is_400_and_kept_for_audit(
        self, gateway: RunningGateway, ledger: Ledger, body: bytes
    ) -> None:
        response = await _post(gateway, body)
        assert response.status_code == 400
        assert response.json()["ResultCode"] == 1
        assert await _callback_counts(ledger) == {"invalid": 1}

    async def test_unknown_checkout_id_is_404_and_kept_for_audit(
        self, gateway: RunningGateway, ledger: Ledger
    ) -> None:
        response = await _post(gateway, stk_callback_payload(checkout_request_id="ws_CO_forged"))
        assert response.status_code == 404
        assert "no payment" in response.json()["ResultDesc"]
        assert await _callback_counts(ledger) == {"unknown_payment": 1}

    async def test_success_with_another_amount_changes_nothing(
        self,
        gateway: RunningGateway,
        api: httpx.AsyncClient,
        ledger: Ledger,
        silent_customer: Emulator,
    ) -> None:
        del silent_customer
        payment = await create(api, "254711222333", 100)
        forged = stk_callback_payload(
            checkout_request_id=payment["checkout_request_id"],
            merchant_request_id=payment["merchant_request_id"],
            amount=1,
            phone=254711222333,
        )
        response = await _post(gateway, forged)
        assert response.status_code == 400
        assert "amount" in response.json()["ResultDesc"]
        after = (await api.get(f"/v1/payments/{payment['id']}")).json()
        assert after["status"] == "pending"
        assert after["receipt"] is None
        assert [e["type"] for e in await events_of(api, payment["id"], at_least=1)] == [
            "payment.pending"
        ]
        assert await _callback_counts(ledger) == {"invalid": 1}


class TestApplied:
    async def test_success_is_applied_once_and_a_repeat_is_acknowledged(
        self,
        gateway: RunningGateway,
        api: httpx.AsyncClient,
        ledger: Ledger,
        silent_customer: Emulator,
    ) -> None:
        del silent_customer
        payment = await create(api, "254711222334", 100)
        body = stk_callback_payload(
            checkout_request_id=payment["checkout_request_id"],
            merchant_request_id=payment["merchant_request_id"],
            amount=100,
            receipt="TST0000001",
            phone=254711222334,
        )
        first = await _post(gateway, body)
        second = await _post(gateway, body)
        assert first.status_code == second.status_code == 200
        assert first.json() == {"ResultCode": 0, "ResultDesc": "Accepted"}
        final = (await api.get(f"/v1/payments/{payment['id']}")).json()
        assert final["status"] == "succeeded"
        assert final["receipt"] == "TST0000001"
        types = [e["type"] for e in await events_of(api, payment["id"], at_least=2)]
        assert types == ["payment.pending", "payment.succeeded"]
        assert await _callback_counts(ledger) == {"applied": 1, "duplicate": 1}

    async def test_failure_callback_fails_the_payment(
        self, gateway: RunningGateway, api: httpx.AsyncClient, silent_customer: Emulator
    ) -> None:
        del silent_customer
        payment = await create(api, "254711222335")
        body = stk_failure_payload(
            1032,
            checkout_request_id=payment["checkout_request_id"],
            merchant_request_id=payment["merchant_request_id"],
        )
        assert (await _post(gateway, body)).status_code == 200
        final = await wait_for(api, payment["id"])
        assert final["status"] == "failed"
        assert final["result_code"] == "1032"

    async def test_emulator_duplicate_delivery_is_applied_once(
        self, api: httpx.AsyncClient, gateway: RunningGateway, ledger: Ledger
    ) -> None:
        """254700000202: the emulator delivers the success callback twice."""
        payment = await create(api, "254700000202")
        await wait_for(api, payment["id"], {"succeeded"})
        assert gateway.emulator_url is not None
        async with AsyncEmulatorControl(gateway.emulator_url, api_key=API_KEY) as control:
            assert await control.wait_idle(10)
        types = [e["type"] for e in await events_of(api, payment["id"], at_least=2)]
        assert types == ["payment.pending", "payment.succeeded"]
        counts = await _callback_counts(ledger)
        # Both deliveries are stored; at most one applied (none, on a machine slow enough
        # for the reconciler's query to settle the payment before the first arrives).
        assert counts.get("applied", 0) + counts.get("duplicate", 0) == 2, counts
        assert counts.get("applied", 0) <= 1, counts

    async def test_lost_callback_is_settled_by_the_reconciler(self, api: httpx.AsyncClient) -> None:
        """254700000404: the callback never comes; the STK query settles the payment."""
        payment = await create(api, "254700000404")
        final = await wait_for(api, payment["id"], timeout=20)
        assert final["status"] == "succeeded"
        assert final["result_code"] == "0"


async def test_api_key_is_not_accepted_as_callback_token(gateway: RunningGateway) -> None:
    assert (await _post(gateway, stk_callback_payload(), token=API_KEY)).status_code == 404


async def test_flag_policy_keeps_a_mismatched_success_as_evidence_and_flags_it_once_paid(
    sqlite_url: str,
) -> None:
    """PESA_CALLBACK_ON_MISMATCH=flag: acknowledged, never trusted; Daraja's query settles it."""
    emulator = Emulator(EmulatorConfig(stk_delay=0.1))
    # The customer pays after a second; the genuine callback is lost.
    emulator.add_rule(Rule(callback="drop", delay=1.0))
    settings = gateway_settings(sqlite_url, callback_on_mismatch="flag")
    with run_gateway(settings, emulator=emulator) as gateway:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=gateway.url, headers=headers) as api:
            payment = await create(api, "254711222336", 100)
            body = stk_callback_payload(
                checkout_request_id=payment["checkout_request_id"],
                merchant_request_id=payment["merchant_request_id"],
                amount=99,
                phone=254711222336,
            )
            response = await _post(gateway, body)
            assert response.status_code == 200
            held = (await api.get(f"/v1/payments/{payment['id']}")).json()
            if held["status"] == "pending":
                # The callback alone changed nothing but the evidence it left.
                assert held["evidence_callback_id"] is not None
                assert not held["flagged"]
            final = await wait_for(api, payment["id"], {"succeeded"}, timeout=20)
    assert final["flagged"]
    assert "amount" in final["flag_reason"]


async def test_a_forged_success_for_a_cancelled_payment_never_makes_it_paid(
    database_url: str,
) -> None:
    """Issue 8, finding 3: the token alone cannot flip a failed payment to succeeded."""
    emulator = Emulator(EmulatorConfig(stk_delay=0.1))
    emulator.add_rule(Rule(result_code=1032))
    settings = gateway_settings(database_url, callback_on_mismatch="flag")
    with run_gateway(settings, emulator=emulator) as gateway:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=gateway.url, headers=headers) as api:
            payment = await create(api, "254711222337", 100)
            failed = await wait_for(api, payment["id"], {"failed"})
            forged = stk_callback_payload(
                checkout_request_id=failed["checkout_request_id"],
                merchant_request_id=failed["merchant_request_id"],
                amount=100,
                receipt="FAKE000001",
                phone=254711222337,
            )
            assert (await _post(gateway, forged)).status_code == 200
            # The reconciler asks Daraja, which says 1032: flagged, still failed, no receipt.
            deadline = anyio.current_time() + 20
            while anyio.current_time() < deadline:
                final = (await api.get(f"/v1/payments/{payment['id']}")).json()
                if final["flagged"]:
                    break
                await anyio.sleep(0.1)
    assert final["status"] == "failed"
    assert final["receipt"] is None
    assert final["flagged"] and "1032" in final["flag_reason"]
    types = [e["type"] for e in await _events(database_url, payment["id"])]
    assert "payment.succeeded" not in types


async def _events(database_url: str, payment_id: str) -> list[dict[str, Any]]:
    async with await Ledger.open(database_url) as ledger:
        page = await ledger.list_events(payment_id=payment_id, limit=100)
    return [e.to_dict() for e in page.items]


class TestLostPushAnswer:
    """The push's answer never came (timeout): its callback reveals the CheckoutRequestID."""

    @pytest.mark.parametrize(
        "customer_delay",
        [0.1, 2.0],
        ids=["callback-before-the-timeout", "callback-after-the-timeout"],
    )
    async def test_callback_adopts_the_payment_and_the_query_settles_it(
        self, sqlite_url: str, customer_delay: float
    ) -> None:
        # Before the timeout the callback meets the payment still created (the push is in
        # flight: never adopted; it is stored and adopted when the push is marked unknown);
        # after it, it meets it unknown and is adopted at once. Either way the id is
        # unverified and only the reconciler's STK query settles the payment.
        emulator = Emulator(EmulatorConfig(stk_delay=customer_delay))
        emulator.add_fault(kind="slow", delay=3.0, path="/mpesa/stkpush", times=1)
        settings = gateway_settings(sqlite_url, timeout=1.0, reconcile_min_age=3.0)
        with run_gateway(settings, emulator=emulator) as gateway:
            headers = {"Authorization": f"Bearer {API_KEY}"}
            async with httpx.AsyncClient(base_url=gateway.url, headers=headers) as api:
                payment = await create(api, "254711666001", 77)
                assert payment["status"] == "unknown"
                final = await wait_for(api, payment["id"], timeout=20)
        assert final["status"] == "succeeded"
        assert final["checkout_request_id"].startswith("ws_CO_")
        assert final["checkout_request_id_verified"] is True, "confirmed by the query"
        assert final["receipt"] is not None, "the adopted callback completes the record"
        assert not final["flagged"]
        async with await Ledger.open(sqlite_url) as ledger:
            counts = await _callback_counts(ledger)
            queries = await ledger.list_stk_queries(payment["id"])
        assert counts == {"unverified": 1}
        assert queries and queries[-1].outcome == "succeeded"


@pytest.fixture
async def orphan_ledger(database_url: str) -> AsyncIterator[Ledger]:
    async with await Ledger.open(database_url) as ledger:
        await ledger.migrate()
        yield ledger


async def _orphan(ledger: Ledger, cid: str, amount: int, phone: Any) -> str:
    body = stk_callback_payload(checkout_request_id=cid, amount=amount, phone=phone)
    outcome = await ledger.ingest_stk_callback(json.dumps(body).encode(), source_ip=None)
    return outcome.status


class TestAdoption:
    """Issue 8, finding 2: an id learnt from a callback is unverified; forgers gain nothing."""

    async def test_ambiguous_failed_or_other_amount_callbacks_are_not_adopted(
        self, orphan_ledger: Ledger
    ) -> None:
        ledger = orphan_ledger
        for key in ("a", "b"):
            payment, _ = await ledger.create_payment(key, "254711666002", 50, "R", "D")
            await ledger.mark_unknown(payment.id, "read timeout")
        lone, _ = await ledger.create_payment("c", "254711666003", 50, "R", "D")
        await ledger.mark_unknown(lone.id, "read timeout")
        assert await _orphan(ledger, "ws_CO_twins", 50, 254711666002) == "unknown_payment"
        failure = stk_failure_payload(1032, checkout_request_id="ws_CO_fail")
        outcome = await ledger.ingest_stk_callback(json.dumps(failure).encode(), source_ip=None)
        assert outcome.status == "unknown_payment"
        assert await _orphan(ledger, "ws_CO_amount", 51, 254711666003) == "unknown_payment"
        assert await _orphan(ledger, "ws_CO_right", 50, 254711666003) == "unverified"
        adopted = await ledger.get_payment(lone.id)
        assert adopted is not None
        assert adopted.status == "unknown", "an adopted payment is not pending: not verified"
        assert adopted.checkout_request_id == "ws_CO_right"
        assert adopted.checkout_request_id_verified is False
        assert adopted.receipt is None, "the callback is not applied, only kept as evidence"
        masked_one, _ = await ledger.create_payment("d", "254711666004", 60, "R", "D")
        await ledger.mark_unknown(masked_one.id, "read timeout")
        assert await _orphan(ledger, "ws_CO_masked", 60, "2547****004") == "unverified"

    async def test_a_push_in_flight_is_never_adopted(self, orphan_ledger: Ledger) -> None:
        ledger = orphan_ledger
        in_flight, _ = await ledger.create_payment("f", "254711666005", 70, "R", "D")
        assert await _orphan(ledger, "ws_CO_forged", 70, 254711666005) == "unknown_payment"
        # Daraja's real answer arrives: it is recorded, the forged id never was.
        accepted = await ledger.mark_accepted(in_flight.id, "ws_CO_real", "m-1")
        assert accepted.checkout_request_id == "ws_CO_real"
        assert accepted.status == "pending"

    async def test_a_forged_adoption_is_never_paid_and_darajas_answer_wins(
        self, orphan_ledger: Ledger
    ) -> None:
        ledger = orphan_ledger
        payment, _ = await ledger.create_payment("g", "254711666006", 80, "R", "D")
        await ledger.mark_unknown(payment.id, "read timeout")
        assert await _orphan(ledger, "ws_CO_forged", 80, 254711666006) == "unverified"
        # A replay of the forged success: still evidence, still unknown.
        assert await _orphan(ledger, "ws_CO_forged", 80, 254711666006) == "unverified"
        held = await ledger.get_payment(payment.id)
        assert held is not None and held.status == "unknown"
        # Daraja's own (late) answer names the real id: it wins.
        real = await ledger.mark_accepted(payment.id, "ws_CO_real", "m-2")
        assert real.checkout_request_id == "ws_CO_real"
        assert real.checkout_request_id_verified is True
        assert real.evidence_callback_id is None

    async def test_an_id_daraja_refuses_is_dropped_and_the_genuine_one_adopted(
        self, orphan_ledger: Ledger
    ) -> None:
        ledger = orphan_ledger
        payment, _ = await ledger.create_payment("h", "254711666007", 90, "R", "D")
        await ledger.mark_unknown(payment.id, "read timeout")
        assert await _orphan(ledger, "ws_CO_forged", 90, 254711666007) == "unverified"
        # The genuine callback finds the payment already holding an (unverified) id.
        assert await _orphan(ledger, "ws_CO_genuine", 90, 254711666007) == "unknown_payment"
        dropped = await ledger.drop_unverified_id(payment.id, "Invalid CheckoutRequestID")
        assert dropped.checkout_request_id == "ws_CO_genuine"
        assert dropped.checkout_request_id_verified is False
        assert (await _callback_counts(ledger)).get("invalid") == 1, "the forged one"

    async def test_an_adopted_payment_that_expires_is_flagged(self, orphan_ledger: Ledger) -> None:
        ledger = orphan_ledger
        payment, _ = await ledger.create_payment("i", "254711666008", 95, "R", "D")
        await ledger.mark_unknown(payment.id, "read timeout")
        assert await _orphan(ledger, "ws_CO_x", 95, 254711666008) == "unverified"
        expired = await ledger.expire(payment.id)
        assert expired.status == "failed"
        assert expired.flagged


async def test_log_mode_accepts_strangers_and_says_so(
    sqlite_url: str, emulator: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    settings = gateway_settings(sqlite_url, callback_allowlist="log")
    with (
        caplog.at_level(logging.WARNING, logger="pesa.gateway.callbacks"),
        run_gateway(settings, emulator=emulator) as gateway,
    ):
        response = await _post(gateway, stk_callback_payload(checkout_request_id="ws_CO_x"))
    assert response.status_code == 404  # past the allowlist; the id is unknown
    assert any("not listed" in r.getMessage() for r in caplog.records)
