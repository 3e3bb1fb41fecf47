"""Scenario 5 (part): property-based fuzzing of the STK callback parser, of the ledger's
callback ingestion, and of every Daraja route of the emulator.

Pass conditions: the parser only ever raises :class:`pesa.InvalidCallbackError`; ingestion
never raises, stores every body raw, and changes a payment only for a well-formed callback
naming it (a success whose amount differs is flagged, never silently accepted); the
emulator answers every request with Daraja-shaped JSON and never crashes.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pesa import InvalidCallbackError, parse_stk_callback
from pesa.emulator import SANDBOX_PASSKEY, Emulator, EmulatorConfig, nairobi_now
from pesa.ledger import Ledger, PaymentStatus
from pesa.testing import stk_callback_payload, stk_failure_payload

from ._harness import size
from ._report import Recorder

SCENARIO = "5. Hostile input"
EXAMPLES = size(150, 3_000)
_T = TypeVar("_T")

pytestmark = pytest.mark.timeout(size(300, 7_200))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
TARGET = "ws_CO_TARGET"
OUTCOMES = ("applied", "unverified", "duplicate", "ignored", "unknown_payment", "invalid")
STK_FIELDS = [
    "MerchantRequestID",
    "CheckoutRequestID",
    "ResultCode",
    "ResultDesc",
    "CallbackMetadata",
]
ITEM_NAMES = ["Amount", "MpesaReceiptNumber", "Balance", "TransactionDate", "PhoneNumber"]


@st.composite
def mutated_callback(
    draw: st.DrawFn, checkout_request_id: str = "ws_CO_FUZZ", phone: int = 254711000001
) -> bytes:
    """A real STK callback with parts replaced, removed or retyped, serialised in odd ways."""
    success = draw(st.booleans())
    if success:
        payload = stk_callback_payload(
            checkout_request_id=checkout_request_id,
            merchant_request_id="mr-fuzz",
            amount=draw(st.sampled_from([10, 10.0, "10", "10.00", 9, 11, 0, -10, 10.5])),
            receipt=draw(st.sampled_from(["RF12345678", "", "X" * 40])),
            phone=draw(st.sampled_from([phone, str(phone), 254711999999, None, "2547****001"])),
        )
    else:
        payload = stk_failure_payload(
            draw(st.sampled_from([1032, "1032", 1, 1037, 2001, 9999, "abc", -1, 0])),
            checkout_request_id=checkout_request_id,
            merchant_request_id="mr-fuzz",
        )
    callback = payload["Body"]["stkCallback"]
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3]))):
        action = draw(st.sampled_from(["replace", "delete", "item", "wrap"]))
        key = draw(st.sampled_from(STK_FIELDS))
        if action == "replace":
            callback[key] = draw(json_values)
        elif action == "delete":
            callback.pop(key, None)
        elif action == "item" and isinstance(callback.get("CallbackMetadata"), dict):
            items = callback["CallbackMetadata"].get("Item")
            if isinstance(items, list):
                items.append(
                    {"Name": draw(st.sampled_from(ITEM_NAMES)), "Value": draw(json_values)}
                )
        else:
            payload = draw(
                st.sampled_from([[payload], {"Body": payload}, {"stkCallback": callback}])
            )
    return json.dumps(payload).encode()


any_body = (
    st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | mutated_callback()
    | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))
)


def run_on(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, _T]) -> _T:
    return loop.run_until_complete(coro)


def test_the_stk_callback_parser_only_ever_raises_invalid_callback_error(
    recorder: Recorder,
) -> None:
    seen: Counter[str] = Counter()

    @FUZZ
    @given(body=any_body)
    def check(body: bytes) -> None:
        try:
            parsed = parse_stk_callback(body)
        except InvalidCallbackError:
            seen["rejected"] += 1
            return
        except Exception:
            seen["crashes"] += 1
            raise
        seen["parsed"] += 1
        assert parsed.checkout_request_id

    try:
        check()
    finally:
        result = recorder.record(
            SCENARIO,
            "parse_stk_callback (hypothesis)",
            {
                "bodies_tried": sum(seen.values()),
                "parsed": seen["parsed"],
                "rejected": seen["rejected"],
                "crashes": seen["crashes"],
            },
            must_be_zero=("crashes",),
            about=(
                "Hypothesis bodies: random bytes, random JSON, and real callbacks with fields "
                "replaced, removed, retyped or wrapped."
            ),
        )
    assert result.passed


def test_ledger_ingestion_of_hostile_callbacks_stores_everything_and_changes_only_what_it_should(
    tmp_path: Path, recorder: Recorder
) -> None:
    loop = asyncio.new_event_loop()
    ledger = run_on(loop, Ledger.open(f"sqlite:///{tmp_path / 'fuzz.db'}"))
    run_on(loop, ledger.migrate())
    seen: Counter[str] = Counter()
    serial = iter(range(10**9))

    async def one(template: bytes) -> None:
        n = next(serial)
        payment, _ = await ledger.create_payment(None, "254711000001", 10, f"F{n}", "Fuzz")
        cid = f"ws_CO_FUZZ{n:08d}"
        payment = await ledger.mark_accepted(payment.id, cid, "mr-fuzz")
        before = sum((await ledger.stats()).callbacks.values())
        body = template.replace(TARGET.encode(), cid.encode())
        try:
            outcome = await ledger.ingest_stk_callback(body, source_ip="203.0.113.9")
        except Exception:
            seen["crashes"] += 1
            raise
        seen[outcome.status] += 1
        after = await ledger.get_payment(payment.id)
        assert after is not None
        assert sum((await ledger.stats()).callbacks.values()) == before + 1, "body not stored"
        if outcome.status == "unverified":
            # Kept as evidence for the reconciler's query: the status never moves.
            assert after.status is payment.status, "an unverified callback moved the status"
            assert after.evidence_callback_id == outcome.callback_id
            assert after.verify_at is not None
            return
        if outcome.status != "applied":
            assert after.version == payment.version, f"{outcome.status} changed the payment"
            return
        parsed = parse_stk_callback(body)
        assert parsed.checkout_request_id == cid
        if after.status is PaymentStatus.SUCCEEDED:
            assert after.receipt
            silently_wrong = parsed.amount is not None and parsed.amount != 10
            if silently_wrong and not after.flagged:
                seen["mismatch_not_flagged"] += 1
            # Paid on a callback's word only when everything was cross-checked.
            if parsed.amount != 10 or parsed.phone != "254711000001" or not parsed.receipt:
                seen["paid_unconfirmed"] += 1
        else:
            assert after.status in (PaymentStatus.FAILED, PaymentStatus.PENDING)

    @FUZZ
    @given(
        body=st.integers(0, 3).flatmap(
            lambda k: any_body if k == 0 else mutated_callback(checkout_request_id=TARGET)
        )
    )
    def check(body: bytes) -> None:
        run_on(loop, one(body))

    try:
        check()
    finally:
        run_on(loop, ledger.close())
        loop.close()
        result = recorder.record(
            SCENARIO,
            "ledger.ingest_stk_callback (hypothesis)",
            {
                "bodies_tried": sum(seen[k] for k in (*OUTCOMES, "crashes")),
                **{k: seen[k] for k in OUTCOMES},
                "crashes": seen["crashes"],
                "mismatch_not_flagged": seen["mismatch_not_flagged"],
                "paid_unconfirmed": seen["paid_unconfirmed"],
            },
            must_be_zero=("crashes", "mismatch_not_flagged", "paid_unconfirmed"),
            about=(
                "Each example opens a fresh pending payment and feeds the ledger one hostile "
                "body (half of them a mutated callback naming that payment)."
            ),
        )
    assert result.passed, result.failures


def _stk_password(timestamp: str) -> str:
    return base64.b64encode(f"174379{SANDBOX_PASSKEY}{timestamp}".encode()).decode()


DARAJA_ROUTES: dict[str, list[str]] = {
    "/mpesa/stkpush/v1/processrequest": [
        "BusinessShortCode",
        "Password",
        "Timestamp",
        "TransactionType",
        "Amount",
        "PartyA",
        "PartyB",
        "PhoneNumber",
        "CallBackURL",
        "AccountReference",
        "TransactionDesc",
    ],
    "/mpesa/stkpushquery/v1/query": [
        "BusinessShortCode",
        "Password",
        "Timestamp",
        "CheckoutRequestID",
    ],
    "/mpesa/c2b/v1/registerurl": ["ShortCode", "ResponseType", "ConfirmationURL", "ValidationURL"],
    "/mpesa/c2b/v2/registerurl": ["ShortCode", "ResponseType", "ConfirmationURL", "ValidationURL"],
    "/mpesa/c2b/v1/simulate": ["ShortCode", "CommandID", "Amount", "Msisdn", "BillRefNumber"],
    "/mpesa/c2b/v2/simulate": ["ShortCode", "CommandID", "Amount", "Msisdn", "BillRefNumber"],
    "/mpesa/b2c/v1/paymentrequest": [
        "InitiatorName",
        "SecurityCredential",
        "CommandID",
        "Amount",
        "PartyA",
        "PartyB",
        "Remarks",
        "QueueTimeOutURL",
        "ResultURL",
        "Occassion",
    ],
    "/mpesa/b2c/v3/paymentrequest": [
        "OriginatorConversationID",
        "InitiatorName",
        "SecurityCredential",
        "CommandID",
        "Amount",
        "PartyA",
        "PartyB",
        "Remarks",
        "QueueTimeOutURL",
        "ResultURL",
        "Occassion",
    ],
    "/mpesa/transactionstatus/v1/query": [
        "Initiator",
        "SecurityCredential",
        "CommandID",
        "TransactionID",
        "PartyA",
        "IdentifierType",
        "ResultURL",
        "QueueTimeOutURL",
        "Remarks",
        "Occasion",
    ],
    "/mpesa/accountbalance/v1/query": [
        "Initiator",
        "SecurityCredential",
        "CommandID",
        "PartyA",
        "IdentifierType",
        "Remarks",
        "QueueTimeOutURL",
        "ResultURL",
    ],
    "/mpesa/reversal/v1/request": [
        "Initiator",
        "SecurityCredential",
        "CommandID",
        "TransactionID",
        "Amount",
        "ReceiverParty",
        "RecieverIdentifierType",
        "ResultURL",
        "QueueTimeOutURL",
        "Remarks",
    ],
}


def _valid_stk_push() -> dict[str, Any]:
    timestamp = f"{nairobi_now():%Y%m%d%H%M%S}"
    return {
        "BusinessShortCode": 174379,
        "Password": _stk_password(timestamp),
        "Timestamp": timestamp,
        "TransactionType": "CustomerPayBillOnline",
        "Amount": 1,
        "PartyA": 254711000002,
        "PartyB": 174379,
        "PhoneNumber": 254711000002,
        "CallBackURL": "http://127.0.0.1:9/callbacks/stk",
        "AccountReference": "FUZZ",
        "TransactionDesc": "Fuzz",
    }


@st.composite
def daraja_request(draw: st.DrawFn) -> tuple[str, str, bytes, str]:
    """(method, path, body, content type) aimed at one of the emulator's Daraja routes."""
    path = draw(st.sampled_from(sorted(DARAJA_ROUTES)))
    fields = DARAJA_ROUTES[path]
    shape = draw(st.sampled_from(["fields", "valid-mutated", "json", "bytes"]))
    if shape == "fields":
        body = json.dumps(
            draw(
                st.dictionaries(
                    st.sampled_from(fields) | st.text(max_size=10), json_values, max_size=12
                )
            )
        ).encode()
    elif shape == "valid-mutated":
        base = _valid_stk_push()
        base["PhoneNumber"] = base["PartyA"] = draw(st.integers(254711000000, 254711999999))
        if draw(st.booleans()):
            base[draw(st.sampled_from(sorted(base)))] = draw(json_values)
        body = json.dumps(base).encode()
        path = "/mpesa/stkpush/v1/processrequest"
    elif shape == "json":
        body = json.dumps(draw(json_values)).encode()
    else:
        body = draw(st.binary(max_size=200))
    method = draw(st.sampled_from(["POST"] * 6 + ["GET", "PUT", "DELETE"]))
    content_type = draw(
        st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded"])
    )
    return method, path, body, content_type


def test_every_emulator_route_answers_hostile_requests_with_daraja_shaped_json(
    recorder: Recorder,
) -> None:
    # Customers never answer and results never come: no callback may leave for a fuzzed URL.
    config = EmulatorConfig(stk_delay=86_400, result_delay=86_400, seed=5)
    emulator = Emulator(config)
    loop = asyncio.new_event_loop()
    run_on(loop, emulator.start())
    token = emulator.issue_token("fuzz")
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=emulator.app), base_url="http://emulator"
    )
    seen: Counter[str] = Counter()

    async def one(method: str, path: str, body: bytes, content_type: str, auth: bool) -> None:
        headers = {"Content-Type": content_type}
        if auth:
            headers["Authorization"] = f"Bearer {token}"
        try:
            response = await client.request(method, path, content=body, headers=headers)
        except Exception:
            seen["crashes"] += 1
            raise
        seen[f"http_{response.status_code // 100}xx"] += 1
        try:
            payload = response.json()
            assert isinstance(payload, dict)
            if response.status_code >= 400:
                assert set(payload) >= {"requestId", "errorCode", "errorMessage"}, payload
            else:
                assert "ResponseCode" in payload or "OriginatorCoversationID" in payload, payload
        except (ValueError, AssertionError):
            seen["not_daraja_shaped"] += 1
            raise

    @FUZZ
    @given(request=daraja_request(), auth=st.booleans() | st.just(True))
    def check(request: tuple[str, str, bytes, str], auth: bool) -> None:
        run_on(loop, one(*request, auth))

    try:
        check()
    finally:
        run_on(loop, client.aclose())
        run_on(loop, emulator.stop())
        loop.close()
        tried = sum(seen.values())
        result = recorder.record(
            SCENARIO,
            "emulator Daraja routes (hypothesis)",
            {
                "requests_tried": tried - seen["not_daraja_shaped"],
                **{f"http_{n}xx": seen[f"http_{n}xx"] for n in (2, 4, 5)},
                "crashes": seen["crashes"],
                "not_daraja_shaped": seen["not_daraja_shaped"],
            },
            must_be_zero=("crashes", "not_daraja_shaped"),
            about=(
                "Requests to every Daraja route of the emulator with random verbs, content types, "
                "field sets and values; an unhandled exception in the app fails the test. Its "
                "5xx answers are Daraja's own HTTP 500 errors (e.g. 500.001.1001, a prompt "
                "already open for that phone), in Daraja's JSON error shape."
            ),
        )
    assert result.passed
