"""Wire models: Daraja's names (and misspellings) on the wire, secrets out of reprs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError as PydanticValidationError

from pesa.daraja import (
    B2CPaymentRequest,
    C2BRegisterUrlResponse,
    ReversalRequest,
    StkPushRequest,
    StkQueryResponse,
    TokenResponse,
)


def _push() -> StkPushRequest:
    return StkPushRequest(
        business_short_code="174379",
        password="c2VjcmV0",
        timestamp="20210628092408",
        transaction_type="CustomerPayBillOnline",
        amount=1,
        party_a="0708374149",
        party_b="174379",
        phone_number="0708374149",
        callback_url="https://example.com/stk/cb",
        account_reference="INV0042",
        transaction_desc="Payment",
    )


def test_stk_push_request_uses_daraja_names() -> None:
    assert _push().to_wire() == {
        "BusinessShortCode": "174379",
        "Password": "c2VjcmV0",
        "Timestamp": "20210628092408",
        "TransactionType": "CustomerPayBillOnline",
        "Amount": 1,
        "PartyA": "254708374149",
        "PartyB": "174379",
        "PhoneNumber": "254708374149",
        "CallBackURL": "https://example.com/stk/cb",
        "AccountReference": "INV0042",
        "TransactionDesc": "Payment",
    }


def test_password_is_not_in_repr() -> None:
    assert "c2VjcmV0" not in repr(_push())


def test_requests_forbid_unknown_fields() -> None:
    with pytest.raises(PydanticValidationError):
        StkPushRequest.model_validate({**_push().to_wire(), "Extra": 1})


def test_b2c_and_reversal_keep_daraja_misspellings() -> None:
    b2c = B2CPaymentRequest(
        originator_conversation_id="oc-1",
        initiator_name="testapi",
        security_credential="cred",
        command_id="BusinessPayment",
        amount=10,
        party_a="600997",
        party_b="0708374149",
        remarks="Refund 1234",
        queue_timeout_url="https://example.com/t",
        result_url="https://example.com/r",
        occasion="x",
    ).to_wire()
    assert b2c["Occassion"] == "x" and b2c["PartyB"] == "254708374149"
    reversal = ReversalRequest(
        initiator="apiop37",
        security_credential="cred",
        transaction_id="PDU91HIVIT",
        amount="200",
        receiver_party="603021",
        result_url="https://example.com/r",
        queue_timeout_url="https://example.com/t",
        remarks="Payment reversal",
    ).to_wire()
    assert reversal["RecieverIdentifierType"] == "11"
    assert "ReceiverIdentifierType" not in reversal


def test_responses_tolerate_drift_and_unknown_fields() -> None:
    token = TokenResponse.model_validate({"access_token": "abc", "expires_in": "3599", "x": 1})
    assert token.expires_in == 3599
    assert "abc" not in repr(token)
    reg = C2BRegisterUrlResponse.model_validate(
        {"OriginatorCoversationID": "6e86", "ResponseCode": "00000000", "ResponseDescription": "ok"}
    )
    assert reg.originator_conversation_id == "6e86"
    query = StkQueryResponse.model_validate(
        {
            "ResponseCode": "0",
            "ResponseDescription": "The service request has been accepted successfully",
            "MerchantRequestID": "ac7b-470b-8df7-23ab3cef38271071873",
            "CheckoutRequestID": "ws_CO_1",
            "ResultCode": "1037",
            "ResultDesc": "No response from user.",
        }
    )
    assert query.result_code == "1037" and not query.pending and not query.succeeded
    assert query.code is not None and query.code.final
