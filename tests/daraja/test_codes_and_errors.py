"""The result-code catalogue, the error mapping and the operation declarations."""

from __future__ import annotations

import json

import pytest

from pesa import (
    AuthenticationError,
    BadRequestError,
    DarajaError,
    DuplicateRequestError,
    InvalidTokenError,
    RateLimitError,
    ServerError,
    UnexpectedResponseError,
)
from pesa.daraja import (
    B2C_PAYMENT,
    OPERATIONS,
    REVERSAL,
    STK_PUSH,
    STK_QUERY,
    StkPushResponse,
    StkQueryRequest,
    StkQueryResponse,
    error_from_response,
    is_invalid_token,
    is_stk_pending,
    is_success_code,
    lookup_code,
    proves_not_processed,
)


@pytest.mark.parametrize(
    ("code", "kind", "final", "success"),
    [
        (0, "stk", True, True),
        ("0", "stk", True, True),
        (1032, "stk", True, False),
        ("1037", "stk", True, False),
        ("SFC_IC0003", "stk", True, False),
        ("C2B00012", "c2b", True, False),
        ("R000001", "initiator", True, False),
        ("2001", "initiator", True, False),
        ("00000000", "c2b", True, True),
        ("500.003.02", "gateway", False, False),
        ("400.002.02", "gateway", True, False),
    ],
)
def test_known_codes(code: str | int, kind: str, final: bool, success: bool) -> None:
    entry = lookup_code(code, kind)  # type: ignore[arg-type]
    assert entry.known
    assert entry.final is final
    assert entry.success is success
    assert entry.customer_message
    assert entry.meaning


@pytest.mark.parametrize("kind", ["stk", "c2b", "initiator", "gateway"])
def test_unknown_codes_are_never_final_success(kind: str) -> None:
    entry = lookup_code("4999", kind)  # type: ignore[arg-type]
    assert not entry.known and not entry.final and not entry.success
    assert entry.action == "verify"


def test_is_success_code() -> None:
    assert is_success_code("0") and is_success_code(0) and is_success_code("00000000")
    assert not is_success_code("1") and not is_success_code(None) and not is_success_code("")
    assert not is_success_code(False)


def _body(code: str, message: str) -> bytes:
    return (
        f'{{"requestId": "1c5b-4ba8-815c-ac45c57a3db01495926", "errorCode": "{code}", '
        f'"errorMessage": "{message}"}}'
    ).encode()


@pytest.mark.parametrize(
    ("status", "code", "message", "cls"),
    [
        (400, "400.002.02", "Bad Request - Invalid Amount", BadRequestError),
        (404, "404.001.03", "Invalid Access Token", InvalidTokenError),
        (401, "401.002.01", "Error Occurred - Invalid Access Token - ", InvalidTokenError),
        (400, "400.003.01", "Invalid Access Token", InvalidTokenError),
        (
            401,
            "401.003.01",
            "Error Occurred - Invalid Access Token - no apiproduct",
            InvalidTokenError,
        ),
        (500, "500.003.02", "Error Occurred: Spike Arrest Violation", RateLimitError),
        (500, "500.003.03", "Quota Violation", RateLimitError),
        (500, "500.002.1001", "Duplicate OriginatorConversationID.", DuplicateRequestError),
        (500, "500.002.1001", "System internal error.", ServerError),
        (500, "500.001.1001", "Wrong credentials", ServerError),
        (405, "405.001", "POST Method Not Allowed", BadRequestError),
    ],
)
def test_error_mapping(status: int, code: str, message: str, cls: type[DarajaError]) -> None:
    err = error_from_response(status, _body(code, message))
    assert type(err) is cls
    assert err.error_code == code
    assert err.error_message == message.strip()
    assert err.request_id == "1c5b-4ba8-815c-ac45c57a3db01495926"
    assert str(err).startswith(f"[{code}]")


def test_error_str_reads_like_the_style_guide() -> None:
    err = error_from_response(400, _body("400.002.02", "Bad Request - Invalid Amount"))
    assert str(err) == (
        "[400.002.02] Bad Request - Invalid Amount (request 1c5b-4ba8-815c-ac45c57a3db01495926)"
    )


@pytest.mark.parametrize(
    ("status", "body", "cls", "fragment"),
    [
        (
            502,
            b"<html><body><h1>502 Bad Gateway</h1></body></html>",
            ServerError,
            "502 Bad Gateway",
        ),
        (400, b"", BadRequestError, "empty body"),
        (503, b"Service Unavailable", ServerError, "Service Unavailable"),
        (500, b"<soapenv:Fault>oops</soapenv:Fault>", ServerError, "oops"),
        (429, b"", RateLimitError, "empty body"),
    ],
)
def test_non_json_error_bodies(
    status: int, body: bytes, cls: type[DarajaError], fragment: str
) -> None:
    err = error_from_response(status, body)
    assert type(err) is cls
    assert err.error_code is None
    assert fragment in err.error_message
    assert err.body == body.decode()


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, _body("400.008.01", "Invalid Authentication passed")),
        (400, _body("400.008.02", "Invalid grant type passed")),
        (400, b""),
        (401, b""),
    ],
)
def test_oauth_failures_are_authentication_errors(status: int, body: bytes) -> None:
    assert type(error_from_response(status, body, oauth=True)) is AuthenticationError


def test_invalid_token_and_pending_predicates() -> None:
    assert is_invalid_token(error_from_response(404, _body("404.001.03", "Invalid Access Token")))
    assert is_invalid_token(error_from_response(401, b""))
    assert not is_invalid_token(
        error_from_response(401, _body("401.003.01", "no apiproduct match found"))
    )
    pending = error_from_response(500, _body("500.001.1001", "The transaction is being processed"))
    assert is_stk_pending(pending)
    assert not is_stk_pending(error_from_response(500, _body("500.001.1001", "Wrong credentials")))


def test_operations_are_declared_once_with_money_flags() -> None:
    names = {op.name for op in OPERATIONS}
    assert {"stk_push", "stk_query", "b2c_payment", "reversal", "account_balance"} <= names
    assert STK_PUSH.moves_money and B2C_PAYMENT.moves_money and REVERSAL.moves_money
    assert not STK_QUERY.moves_money
    assert len({(op.path) for op in OPERATIONS}) == len(OPERATIONS)


def test_decode_refuses_a_non_zero_response_code() -> None:
    data = {
        "MerchantRequestID": "m",
        "CheckoutRequestID": "ws",
        "ResponseCode": "1",
        "ResponseDescription": "Rejected",
    }
    with pytest.raises(BadRequestError, match="Rejected"):
        STK_PUSH.decode(200, data, "")
    data["ResponseCode"] = 0
    assert isinstance(STK_PUSH.decode(200, data, ""), StkPushResponse)


def test_decode_refuses_an_unexpected_shape() -> None:
    with pytest.raises(DarajaError, match="unexpected answer shape"):
        STK_PUSH.decode(200, {"hello": 1}, "")
    with pytest.raises(DarajaError, match="not an object"):
        STK_PUSH.decode(200, [1], "")


# -- wire knowledge the gateway and the client share -----------------------------------------


@pytest.mark.parametrize(
    ("error", "refused"),
    [
        (BadRequestError(400, "400.002.02", "Bad Request - Invalid Amount"), True),
        (RateLimitError(500, "500.003.02", "Spike arrest violation"), True),
        (ServerError(500, "500.001.1001", "Unable to lock subscriber, a transaction is"), True),
        (ServerError(500, "500.001.1001", "Merchant does not exist"), True),
        (ServerError(500, "500.001.1001", "Wrong credentials"), True),
        (ServerError(500, "500.001.1001", "Internal Server Error"), False),
        (ServerError(503, None, "HTTP 503 with an empty body"), False),
        (UnexpectedResponseError(200, None, "stk_push: HTTP 200 with a non-JSON body"), False),
    ],
)
def test_proves_not_processed_reads_daraja_refusals(error: DarajaError, refused: bool) -> None:
    assert proves_not_processed(error) is refused


def test_the_stk_query_operation_reads_still_being_processed_as_pending() -> None:
    request = StkQueryRequest(
        business_short_code="174379",
        password="cGFzcw==",
        timestamp="20240101120000",
        checkout_request_id="ws_CO_1",
    )
    body = json.dumps(
        {
            "requestId": "ws_CO_1",
            "errorCode": "500.001.1001",
            "errorMessage": "The transaction is being processed",
        }
    ).encode()
    answer = STK_QUERY.interpret(request, 500, body)
    assert isinstance(answer, StkQueryResponse) and answer.pending
    assert answer.checkout_request_id == "ws_CO_1"
    other = STK_QUERY.interpret(request, 500, b'{"errorCode": "500.001.1001", "errorMessage": "x"}')
    assert isinstance(other, ServerError)
    # Only the STK query knows this status: the same answer to a push is an error.
    assert isinstance(STK_PUSH.interpret(request, 500, body), ServerError)  # type: ignore[arg-type]


@pytest.mark.parametrize("body", [b"", b"<html>proxy</html>", b"[1, 2]", b'{"odd": 1}'])
def test_an_unreadable_2xx_is_unexpected_not_server_error(body: bytes) -> None:
    request = StkQueryRequest(
        business_short_code="174379",
        password="cGFzcw==",
        timestamp="20240101120000",
        checkout_request_id="ws_CO_1",
    )
    answer = STK_QUERY.interpret(request, 200, body, {"x-edge": "1"})
    assert isinstance(answer, UnexpectedResponseError) and not isinstance(answer, ServerError)
    assert answer.headers == {"x-edge": "1"}
