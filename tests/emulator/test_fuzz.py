"""Whatever JSON arrives, every Daraja endpoint answers in Daraja's envelope, never crashes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pesa.emulator import Emulator, EmulatorConfig

from .conftest import fake_credential, stk_password, stk_timestamp

PATHS = [
    "/mpesa/stkpush/v1/processrequest",
    "/mpesa/stkpushquery/v1/query",
    "/mpesa/c2b/v1/registerurl",
    "/mpesa/c2b/v2/simulate",
    "/mpesa/b2c/v3/paymentrequest",
    "/mpesa/transactionstatus/v1/query",
    "/mpesa/accountbalance/v1/query",
    "/mpesa/reversal/v1/request",
]
FIELDS = [
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
    "CheckoutRequestID",
    "ShortCode",
    "ResponseType",
    "ConfirmationURL",
    "ValidationURL",
    "CommandID",
    "Msisdn",
    "BillRefNumber",
    "OriginatorConversationID",
    "InitiatorName",
    "Initiator",
    "SecurityCredential",
    "Remarks",
    "QueueTimeOutURL",
    "ResultURL",
    "TransactionID",
    "IdentifierType",
    "ReceiverParty",
    "RecieverIdentifierType",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["174379", "600997", "254708374149", "http://127.0.0.1:9/x", "20240101000000"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=5)
overrides = st.dictionaries(st.sampled_from(FIELDS), values, max_size=3)


def _valid(path: str) -> dict[str, Any]:
    """A body the path accepts, which the test then spoils a few fields of."""
    ts = stk_timestamp()
    initiator = {
        "Initiator": "testapi",
        "InitiatorName": "testapi",
        "SecurityCredential": fake_credential(),
        "ResultURL": "http://127.0.0.1:9/r",
        "QueueTimeOutURL": "http://127.0.0.1:9/t",
        "Remarks": "ok",
    }
    bodies: dict[str, dict[str, Any]] = {
        "/mpesa/stkpush/v1/processrequest": {
            "BusinessShortCode": 174379,
            "Password": stk_password(ts),
            "Timestamp": ts,
            "TransactionType": "CustomerPayBillOnline",
            "Amount": 1,
            "PartyA": "254711223344",
            "PartyB": "174379",
            "PhoneNumber": "254711223344",
            "CallBackURL": "http://127.0.0.1:9/cb",
            "AccountReference": "A",
        },
        "/mpesa/stkpushquery/v1/query": {
            "BusinessShortCode": "174379",
            "Password": stk_password(ts),
            "Timestamp": ts,
            "CheckoutRequestID": "ws_CO_1",
        },
        "/mpesa/c2b/v1/registerurl": {
            "ShortCode": "600997",
            "ResponseType": "Completed",
            "ConfirmationURL": "http://127.0.0.1:9/c",
            "ValidationURL": "http://127.0.0.1:9/v",
        },
        "/mpesa/c2b/v2/simulate": {
            "ShortCode": 600997,
            "CommandID": "CustomerPayBillOnline",
            "Amount": 1,
            "Msisdn": 254711223344,
            "BillRefNumber": "A",
        },
        "/mpesa/b2c/v3/paymentrequest": {
            **initiator,
            "OriginatorConversationID": "oc",
            "CommandID": "BusinessPayment",
            "Amount": 10,
            "PartyA": 600997,
            "PartyB": 254711223344,
        },
        "/mpesa/transactionstatus/v1/query": {
            **initiator,
            "CommandID": "TransactionStatusQuery",
            "TransactionID": "NEF61H8J60",
            "PartyA": "600997",
            "IdentifierType": "4",
        },
        "/mpesa/accountbalance/v1/query": {
            **initiator,
            "CommandID": "AccountBalance",
            "PartyA": "600997",
            "IdentifierType": "4",
        },
        "/mpesa/reversal/v1/request": {
            **initiator,
            "CommandID": "TransactionReversal",
            "TransactionID": "NEF61H8J60",
            "Amount": "10",
            "ReceiverParty": "600997",
            "RecieverIdentifierType": "11",
        },
    }
    return bodies[path]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), spoilt=overrides)
@example(path=PATHS[0], spoilt={"Amount": float("inf")})
@example(path=PATHS[4], spoilt={"Amount": 1e300, "PartyB": [1]})
@example(path=PATHS[7], spoilt={"Amount": float("nan")})
def test_any_body_gets_a_daraja_answer(path: str, spoilt: dict[str, Any]) -> None:
    body = {**_valid(path), **spoilt}

    async def run() -> httpx.Response:
        async with Emulator(EmulatorConfig(stk_delay=0, result_delay=0)) as emulator:
            token = emulator.issue_token()
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(emulator.app), base_url="http://d"
            ) as http:
                return await http.post(
                    path,
                    content=json.dumps(body).encode(),
                    headers={"Authorization": f"Bearer {token}"},
                )

    response = asyncio.run(run())
    payload = response.json()
    if response.status_code == 200:
        assert payload["ResponseCode"] in ("0", "00000000")
    else:
        assert set(payload) == {"requestId", "errorCode", "errorMessage"}
        assert response.status_code in (400, 500)
