"""Both clients against a fake Daraja: every operation's request body and typed answer."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from pesa import BadRequestError, ConfigurationError, TransportError, ValidationError
from pesa.daraja import StkPushResponse, StkQueryResponse

from .conftest import SANDBOX_PASSKEY, STK_QUERY_PENDING, Face, error_body

STK = "/mpesa/stkpush/v1/processrequest"
QUERY = "/mpesa/stkpushquery/v1/query"
B2C = "/mpesa/b2c/v3/paymentrequest"
CHECK_PASSWORD = base64.b64encode(f"174379{SANDBOX_PASSKEY}20160216165627".encode()).decode()


async def test_stk_push_sends_the_daraja_body_and_returns_a_typed_answer(face: Face) -> None:
    push = await face("stk_push", "0708 374 149", 10, "INV0042", "Order 42")
    assert isinstance(push, StkPushResponse)
    assert push.checkout_request_id == "ws_CO_1007202409152617172396192"
    assert push.merchant_request_id == "ac7b-470b-8df7-23ab3cef38271071873"
    (sent,) = face.fake.paths(STK)
    assert sent.headers["Authorization"].startswith("Bearer tok-1-")
    assert sent.headers["Content-Type"] == "application/json"
    assert json.loads(sent.content) == {
        "BusinessShortCode": "174379",
        "Password": CHECK_PASSWORD,
        "Timestamp": "20160216165627",
        "TransactionType": "CustomerPayBillOnline",
        "Amount": 10,
        "PartyA": "254708374149",
        "PartyB": "174379",
        "PhoneNumber": "254708374149",
        "CallBackURL": "https://example.com/stk/cb",
        "AccountReference": "INV0042",
        "TransactionDesc": "Order 42",
    }


async def test_stk_push_to_a_till_is_buy_goods_with_the_till_as_party_b(face: Face) -> None:
    await face(
        "stk_push", "0110123456", 5, "INV1", callback_url="https://shop.test/cb", till=5123456
    )
    (body,) = face.fake.bodies(STK)
    assert body["TransactionType"] == "CustomerBuyGoodsOnline"
    assert body["PartyB"] == "5123456"
    assert body["BusinessShortCode"] == "174379"
    assert body["PartyA"] == "254110123456"
    assert body["CallBackURL"] == "https://shop.test/cb"
    assert body["TransactionDesc"] == "Payment"


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("0208374149", 10, "INV"), "phone"),
        (("0708374149", 0, "INV"), "amount"),
        (("0708374149", 250_001, "INV"), "amount"),
        (("0708374149", 10.0, "INV"), "amount"),
        (("0708374149", 10, "A" * 13), "account_reference"),
        (("0708374149", 10, "INV", "D" * 14), "description"),
        (("0708374149", 10, "INV", "ok", "not a url"), "callback_url"),
    ],
)
async def test_bad_input_is_refused_before_any_network_call(
    face: Face, args: tuple[object, ...], field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        await face("stk_push", *args)
    assert info.value.field == field
    assert face.fake.calls == []


async def test_amount_limits_are_configurable(face: Face) -> None:
    client = face.make(stk_amount_limits=(1, 70_000))
    with pytest.raises(ValidationError, match="between 1 and 70000"):
        await face("stk_push", "0708374149", 70_001, "INV", client=client)


async def test_stk_query_final_answer(face: Face) -> None:
    result = await face("stk_query", "ws_CO_1007202409152617172396192")
    assert isinstance(result, StkQueryResponse)
    assert not result.pending and not result.succeeded
    assert result.result_code == "1037"
    assert result.result_desc == "No response from user."
    (body,) = face.fake.bodies(QUERY)
    assert body == {
        "BusinessShortCode": "174379",
        "Password": CHECK_PASSWORD,
        "Timestamp": "20160216165627",
        "CheckoutRequestID": "ws_CO_1007202409152617172396192",
    }


async def test_stk_query_being_processed_is_pending_not_an_error(face: Face) -> None:
    face.fake.routes[QUERY] = httpx.Response(500, json=STK_QUERY_PENDING)
    result = await face("stk_query", "ws_CO_1007202409152617172396192")
    assert result.pending
    assert result.result_code is None
    assert result.checkout_request_id == "ws_CO_1007202409152617172396192"
    assert result.result_desc == "The transaction is being processed"
    assert len(face.fake.paths(QUERY)) == 1


async def test_stk_query_paid(face: Face) -> None:
    face.fake.routes[QUERY] = httpx.Response(
        200,
        json={
            "ResponseCode": "0",
            "ResponseDescription": "The service request has been accepted successfully",
            "MerchantRequestID": "ac7b-470b-8df7-23ab3cef38271071873",
            "CheckoutRequestID": "ws_CO_1",
            "ResultCode": "0",
            "ResultDesc": "The service request is processed successfully.",
        },
    )
    result = await face("stk_query", "ws_CO_1")
    assert result.succeeded and result.code is not None and result.code.success


def _certificate(tmp_path: Path) -> tuple[rsa.RSAPrivateKey, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pesa emulator")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2040, 1, 1, tzinfo=UTC))
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "emulator.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, path


async def test_b2c_payment_encrypts_the_credential_with_the_given_certificate(
    face: Face, tmp_path: Path
) -> None:
    key, path = _certificate(tmp_path)
    client = face.make(
        environment="emulator",
        security_credential=None,
        initiator_password="Safaricom999!*!",
        certificate_path=path,
        shortcode="600997",
    )
    ack = await face(
        "b2c_payment",
        "0708374149",
        10,
        "Refund 1234",
        originator_conversation_id="order-42-refund",
        client=client,
    )
    assert ack.conversation_id == "AG_20230420_2010759fd5662ef6d054"
    (body,) = face.fake.bodies(B2C)
    credential = body.pop("SecurityCredential")
    assert key.decrypt(base64.b64decode(credential), padding.PKCS1v15()) == b"Safaricom999!*!"
    assert body == {
        "OriginatorConversationID": "order-42-refund",
        "InitiatorName": "testapi",
        "CommandID": "BusinessPayment",
        "Amount": 10,
        "PartyA": "600997",
        "PartyB": "254708374149",
        "Remarks": "Refund 1234",
        "QueueTimeOutURL": "https://example.com/timeout",
        "ResultURL": "https://example.com/result",
    }


async def test_b2c_limits_and_generated_originator_id(face: Face) -> None:
    with pytest.raises(ValidationError, match="between 10 and 250000"):
        await face("b2c_payment", "0708374149", 9, "Refund")
    await face("b2c_payment", "0708374149", 10, "Refund", occasion="Xmas")
    (body,) = face.fake.bodies(B2C)
    assert len(body["OriginatorConversationID"]) == 32
    assert body["Occassion"] == "Xmas"


async def test_emulator_credential_needs_a_certificate_path(face: Face) -> None:
    client = face.make(environment="emulator", security_credential=None, initiator_password="pw")
    with pytest.raises(ConfigurationError, match="PESA_CERTIFICATE_PATH"):
        await face("b2c_payment", "0708374149", 10, "Refund", client=client)
    assert face.fake.calls == []


async def test_sandbox_credential_uses_the_bundled_certificate(face: Face) -> None:
    client = face.make(security_credential=None, initiator_password="Safaricom999!*!")
    await face("account_balance", client=client)
    (body,) = face.fake.bodies("/mpesa/accountbalance/v1/query")
    assert len(body["SecurityCredential"]) == 344
    assert body["CommandID"] == "AccountBalance"
    assert body["IdentifierType"] == "4"
    assert body["Initiator"] == "testapi"


async def test_transaction_status_by_originator_id(face: Face) -> None:
    await face("transaction_status", original_conversation_id="order-42-refund")
    (body,) = face.fake.bodies("/mpesa/transactionstatus/v1/query")
    assert body["OriginalConversationID"] == "order-42-refund"
    assert "TransactionID" not in body
    assert body["CommandID"] == "TransactionStatusQuery"
    with pytest.raises(ValidationError, match="transaction_id"):
        await face("transaction_status")


async def test_reversal_uses_daraja_spelling(face: Face) -> None:
    await face("reversal", "PDU91HIVIT", 200, receiver_party="603021")
    (body,) = face.fake.bodies("/mpesa/reversal/v1/request")
    assert body["RecieverIdentifierType"] == "11"
    assert body["Amount"] == "200"
    assert body["ReceiverParty"] == "603021"


async def test_c2b_register_and_simulate(face: Face) -> None:
    ack = await face(
        "c2b_register_urls",
        "https://example.com/c2b/confirm/s3cr3t",
        "https://example.com/c2b/validate/s3cr3t",
        shortcode="600984",
    )
    assert ack.originator_conversation_id == "6e86-45dd-91ac-fd5d4178ab523369"
    assert face.fake.bodies("/mpesa/c2b/v2/registerurl")[0]["ResponseType"] == "Completed"
    await face("c2b_register_urls", "https://e.com/c", "https://e.com/v", version=1)
    assert len(face.fake.paths("/mpesa/c2b/v1/registerurl")) == 1
    await face("c2b_simulate", "0708374149", 1, bill_ref_number="ACC001", shortcode=600984)
    (body,) = face.fake.bodies("/mpesa/c2b/v2/simulate")
    assert body == {
        "ShortCode": "600984",
        "CommandID": "CustomerPayBillOnline",
        "Amount": 1,
        "Msisdn": "254708374149",
        "BillRefNumber": "ACC001",
    }


async def test_c2b_simulate_is_refused_in_production(face: Face) -> None:
    client = face.make(environment="production")
    with pytest.raises(ConfigurationError, match="sandbox and the emulator"):
        await face("c2b_simulate", "0708374149", 1, client=client)


async def test_a_non_zero_response_code_in_a_200_is_an_error(face: Face) -> None:
    face.fake.routes["/mpesa/c2b/v2/registerurl"] = httpx.Response(
        200,
        json={
            "ResponseCode": "1",
            "ResponseDescription": "Validation and Confirmation URLs are already registered",
        },
    )
    with pytest.raises(BadRequestError, match="already registered"):
        await face("c2b_register_urls", "https://e.com/c", "https://e.com/v")


async def test_unknown_paths_give_daraja_errors(face: Face) -> None:
    face.fake.routes[QUERY] = httpx.Response(
        404, json=error_body("404.001.01", "Resource not found")
    )
    with pytest.raises(BadRequestError) as info:
        await face("stk_query", "ws_CO_x")
    assert info.value.error_code == "404.001.01"


async def test_with_options_changes_timeout_and_retries_but_shares_the_token(face: Face) -> None:
    await face("stk_query", "ws_CO_1")
    quick = face.client.with_options(timeout=5, max_retries=0)
    face.fake.routes[QUERY] = httpx.ReadTimeout("t")
    with pytest.raises(TransportError):
        await face("stk_query", "ws_CO_1", client=quick)
    queries = face.sent(QUERY)
    assert len(queries) == 2  # no retry on the copy
    assert queries[-1].extensions["timeout"]["read"] == 5
    assert queries[0].extensions["timeout"]["read"] == face.client.options.timeout  # 30 s
    assert face.fake.tokens_issued == 1
    with pytest.raises(ValidationError, match="timeout"):
        face.client.with_options(timeout=0)
