"""Errors, tokens, retries and timeouts: what happens when Daraja misbehaves or goes silent."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import anyio
import httpx
import pytest

from pesa import (
    AsyncDaraja,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    Daraja,
    DarajaError,
    DuplicateRequestError,
    InvalidTokenError,
    OutcomeUnknownError,
    RateLimitError,
    ServerError,
    TransportError,
)
from pesa.client import FileTokenStore, InMemoryTokenStore
from pesa.testing import FrozenClock

from .conftest import (
    CONSUMER_SECRET,
    SANDBOX_PASSKEY,
    STK_PUSH_OK,
    Face,
    FakeDaraja,
    client_kwargs,
    error_body,
)

STK = "/mpesa/stkpush/v1/processrequest"
QUERY = "/mpesa/stkpushquery/v1/query"
B2C = "/mpesa/b2c/v3/paymentrequest"
OAUTH = "/oauth/v1/generate"


# -- every error shape ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "message", "cls"),
    [
        (400, "400.002.02", "Bad Request - Invalid PhoneNumber", BadRequestError),
        (400, "400.002.05", "Invalid Request Payload", BadRequestError),
        (405, "405.001", "POST Method Not Allowed", BadRequestError),
        (
            401,
            "401.003.01",
            "Error Occurred - Invalid Access Token - Invalid API call as no apiproduct match found",
            InvalidTokenError,
        ),
        (500, "500.001.1001", "Merchant does not exist", ServerError),
        (
            500,
            "500.001.1001",
            "Unable to lock subscriber, a transaction is already in process",
            ServerError,
        ),
        (500, "500.003.02", "Error Occurred: Spike Arrest Violation", RateLimitError),
        (500, "500.003.03", "Quota Violation", RateLimitError),
        (500, "500.003.1001", "Internal Server Error", ServerError),
    ],
)
async def test_stk_push_errors_are_raised_typed_and_never_resent(
    face: Face, status: int, code: str, message: str, cls: type[DarajaError]
) -> None:
    face.fake.routes[STK] = httpx.Response(status, json=error_body(code, message))
    with pytest.raises(cls) as info:
        await face("stk_push", "0708374149", 10, "INV0042")
    assert type(info.value) is cls
    assert info.value.error_code == code
    assert info.value.error_message == message
    assert info.value.request_id == "1c5b-4ba8-815c-ac45c57a3db0149"
    assert info.value.status_code == status
    assert len(face.fake.paths(STK)) == 1


async def test_b2c_duplicate_originator_id(face: Face) -> None:
    face.fake.routes[B2C] = httpx.Response(
        500, json=error_body("500.002.1001", "Duplicate OriginatorConversationID.")
    )
    with pytest.raises(DuplicateRequestError):
        await face("b2c_payment", "0708374149", 100, "Salary", originator_conversation_id="x-1")
    assert len(face.fake.paths(B2C)) == 1


@pytest.mark.parametrize(
    ("response", "cls", "fragment"),
    [
        (
            httpx.Response(502, text="<html><body><h1>502 Bad Gateway</h1></body></html>"),
            ServerError,
            "502 Bad Gateway",
        ),
        (httpx.Response(400, content=b""), BadRequestError, "empty body"),
        (httpx.Response(503, text="Service Unavailable"), ServerError, "Service Unavailable"),
    ],
)
async def test_non_json_error_bodies(
    face: Face, response: httpx.Response, cls: type[DarajaError], fragment: str
) -> None:
    face.fake.routes[STK] = response
    with pytest.raises(cls) as info:
        await face("stk_push", "0708374149", 10, "INV0042")
    assert info.value.error_code is None
    assert fragment in str(info.value)


async def test_safe_requests_retry_5xx_and_spike_arrest_then_succeed(face: Face) -> None:
    face.fake.routes[QUERY] = [
        httpx.Response(500, json=error_body("500.003.02", "Spike Arrest Violation")),
        httpx.Response(503, text="<html>busy</html>"),
        httpx.Response(
            200,
            json={
                "ResponseCode": "0",
                "CheckoutRequestID": "ws_CO_1",
                "ResultCode": "0",
                "ResultDesc": "ok",
            },
        ),
    ]
    result = await face("stk_query", "ws_CO_1")
    assert result.succeeded
    assert len(face.fake.paths(QUERY)) == 3


async def test_safe_requests_give_up_after_max_retries(face: Face) -> None:
    face.fake.routes[QUERY] = httpx.Response(
        500, json=error_body("500.003.02", "Spike Arrest Violation")
    )
    with pytest.raises(RateLimitError):
        await face("stk_query", "ws_CO_1")
    assert len(face.fake.paths(QUERY)) == 3  # first attempt + max_retries=2


async def test_a_bad_request_is_not_retried(face: Face) -> None:
    face.fake.routes[QUERY] = httpx.Response(
        400, json=error_body("400.002.02", "Bad Request - Invalid CheckoutRequestID")
    )
    with pytest.raises(BadRequestError):
        await face("stk_query", "ws_CO_1")
    assert len(face.fake.paths(QUERY)) == 1


# -- timeouts and transport failures ------------------------------------------------------


async def test_stk_push_whose_response_times_out_is_sent_once_and_outcome_unknown(
    face: Face,
) -> None:
    face.fake.routes[STK] = httpx.ReadTimeout("timed out")
    with pytest.raises(OutcomeUnknownError) as info:
        await face("stk_push", "0708374149", 10, "INV0042")
    assert len(face.fake.paths(STK)) == 1
    err = info.value
    assert err.operation == "stk_push"
    assert err.request.body["Password"] == "[redacted]"
    assert err.request.body["AccountReference"] == "INV0042"
    assert err.request.body["Timestamp"] == "20160216165627"
    assert SANDBOX_PASSKEY not in str(err.request.body)
    assert "254708374149" not in str(err)


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ReadTimeout("t"),
        httpx.WriteTimeout("t"),
        httpx.ReadError("reset"),
        httpx.RemoteProtocolError("eof"),
    ],
)
async def test_b2c_failures_after_sending_are_never_resent(face: Face, failure: Exception) -> None:
    face.fake.routes[B2C] = failure
    with pytest.raises(OutcomeUnknownError) as info:
        await face("b2c_payment", "0708374149", 100, "Salary", originator_conversation_id="pay-7")
    assert len(face.fake.paths(B2C)) == 1
    assert info.value.request.body["OriginatorConversationID"] == "pay-7"
    assert info.value.request.body["SecurityCredential"] == "[redacted]"


async def test_a_200_that_cannot_be_read_is_outcome_unknown_for_money(face: Face) -> None:
    face.fake.routes[STK] = httpx.Response(200, text="<html>proxy</html>")
    with pytest.raises(OutcomeUnknownError):
        await face("stk_push", "0708374149", 10, "INV0042")
    assert len(face.fake.paths(STK)) == 1


@pytest.mark.parametrize(
    "failure", [httpx.ConnectError("refused"), httpx.ConnectTimeout("t"), httpx.PoolTimeout("t")]
)
async def test_stk_push_is_resent_when_it_provably_never_left(
    face: Face, failure: Exception
) -> None:
    face.fake.routes[STK] = [failure, httpx.Response(200, json=STK_PUSH_OK)]
    push = await face("stk_push", "0708374149", 10, "INV0042")
    assert push.checkout_request_id == STK_PUSH_OK["CheckoutRequestID"]
    assert len(face.fake.paths(STK)) == 2


async def test_connect_errors_exhausted_are_transport_errors(face: Face) -> None:
    face.fake.routes[STK] = httpx.ConnectError("refused")
    with pytest.raises(TransportError, match="ConnectError"):
        await face("stk_push", "0708374149", 10, "INV0042")
    assert len(face.fake.paths(STK)) == 3


async def test_queries_retry_read_timeouts(face: Face) -> None:
    face.fake.routes[QUERY] = [
        httpx.ReadTimeout("t"),
        httpx.Response(
            200,
            json={
                "ResponseCode": "0",
                "CheckoutRequestID": "ws_CO_1",
                "ResultCode": "1032",
                "ResultDesc": "Request cancelled by user",
            },
        ),
    ]
    result = await face("stk_query", "ws_CO_1")
    assert result.result_code == "1032"
    assert len(face.fake.paths(QUERY)) == 2


async def test_queries_time_out_into_transport_error(face: Face) -> None:
    face.fake.routes[QUERY] = httpx.ReadTimeout("t")
    with pytest.raises(TransportError):
        await face("stk_query", "ws_CO_1")
    assert len(face.fake.paths(QUERY)) == 3


# -- tokens -------------------------------------------------------------------------------


async def test_one_token_serves_many_calls(face: Face) -> None:
    for _ in range(5):
        await face("stk_push", "0708374149", 10, "INV0042")
    assert face.fake.tokens_issued == 1
    assert len(face.fake.paths(OAUTH)) == 1


async def test_token_expiry_mid_run_refreshes_once_and_resends(face: Face) -> None:
    await face("stk_push", "0708374149", 10, "INV0042")
    face.fake.revoke_all()  # Daraja forgets the token: the next call gets 404.001.03
    push = await face("stk_push", "0708374149", 10, "INV0042")
    assert push.checkout_request_id == STK_PUSH_OK["CheckoutRequestID"]
    assert face.fake.tokens_issued == 2
    assert len(face.fake.paths(STK)) == 3  # ok, refused, re-sent


async def test_bare_401_invalid_token_is_refreshed_too(face: Face) -> None:
    await face("stk_query", "ws_CO_1")
    face.fake.routes[QUERY] = [
        httpx.Response(
            401, json=error_body("401.002.01", "Error Occurred - Invalid Access Token - ")
        ),
        httpx.Response(
            200,
            json={
                "ResponseCode": "0",
                "CheckoutRequestID": "ws_CO_1",
                "ResultCode": "0",
                "ResultDesc": "ok",
            },
        ),
    ]
    assert (await face("stk_query", "ws_CO_1")).succeeded
    assert face.fake.tokens_issued == 2


async def test_a_token_refused_twice_is_raised(face: Face) -> None:
    face.fake.routes[STK] = httpx.Response(
        404, json=error_body("404.001.03", "Invalid Access Token")
    )
    with pytest.raises(InvalidTokenError):
        await face("stk_push", "0708374149", 10, "INV0042")
    assert len(face.fake.paths(STK)) == 2
    assert face.fake.tokens_issued == 2


async def test_tokens_are_refreshed_before_expires_in(face: Face) -> None:
    await face("stk_push", "0708374149", 10, "INV0042")
    face.clock.advance(seconds=3599 - 121)
    await face("stk_push", "0708374149", 10, "INV0042")
    assert face.fake.tokens_issued == 1
    face.clock.advance(seconds=2)
    await face("stk_push", "0708374149", 10, "INV0042")
    assert face.fake.tokens_issued == 2


async def test_numeric_expires_in_is_accepted(face: Face) -> None:
    face.fake.expires_in = 3599
    token = await face("access_token")
    assert token.expires_at == face.clock.now() + timedelta(seconds=3599 - 120)
    assert "tok-1" not in repr(token)
    again = await face("access_token")
    assert again.value == token.value
    fresh = await face("access_token", refresh=True)
    assert fresh.value != token.value


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(400, json=error_body("400.008.01", "Invalid Authentication passed")),
        httpx.Response(400, content=b""),
        httpx.Response(200, json={"unexpected": True}),
    ],
)
async def test_oauth_refusals_are_authentication_errors(face: Face, answer: httpx.Response) -> None:
    face.fake.oauth_responses.extend([answer] * 3)
    with pytest.raises(AuthenticationError):
        await face("stk_push", "0708374149", 10, "INV0042")
    assert face.fake.paths(STK) == []


async def test_wrong_secret_is_an_authentication_error(face: Face) -> None:
    client = face.make(consumer_secret="wrong")
    with pytest.raises(AuthenticationError, match="400.008.01"):
        await face("stk_push", "0708374149", 10, "INV0042", client=client)
    assert face.fake.paths(STK) == []


async def test_oauth_outage_is_retried_and_the_push_sent_once(face: Face) -> None:
    face.fake.oauth_responses.extend(
        [httpx.ReadTimeout("t"), httpx.Response(503, text="<html>down</html>")]
    )
    push = await face("stk_push", "0708374149", 10, "INV0042")
    assert push.checkout_request_id
    assert len(face.fake.paths(STK)) == 1
    assert len(face.fake.paths(OAUTH)) == 3


async def test_missing_credentials_name_their_variable(face: Face) -> None:
    client = face.make(consumer_key=None)
    with pytest.raises(ConfigurationError, match="PESA_CONSUMER_KEY"):
        await face("stk_push", "0708374149", 10, "INV0042", client=client)
    client = face.make(passkey=None)
    with pytest.raises(ConfigurationError, match="PESA_PASSKEY"):
        await face("stk_push", "0708374149", 10, "INV0042", client=client)
    client = face.make(callback_url=None)
    with pytest.raises(ConfigurationError, match="PESA_CALLBACK_URL"):
        await face("stk_push", "0708374149", 10, "INV0042", client=client)
    client = face.make(initiator_name=None)
    with pytest.raises(ConfigurationError, match="PESA_INITIATOR_NAME"):
        await face("account_balance", client=client)
    assert face.fake.calls == []


async def test_a_file_token_store_shares_one_token_between_clients(
    face: Face, tmp_path: Path
) -> None:
    store = FileTokenStore(tmp_path / "tokens.json")
    first = face.make(token_store=store)
    second = face.make(token_store=store)
    await face("stk_push", "0708374149", 10, "INV0042", client=first)
    await face("stk_push", "0708374149", 10, "INV0042", client=second)
    assert face.fake.tokens_issued == 1
    assert (tmp_path / "tokens.json").stat().st_mode & 0o777 == 0o600
    assert CONSUMER_SECRET not in (tmp_path / "tokens.json").read_text()


# -- concurrency: exactly one token --------------------------------------------------------


async def test_200_concurrent_stk_pushes_on_one_async_client_fetch_one_token(
    clock: FrozenClock,
) -> None:
    fake = FakeDaraja(routes={STK: httpx.Response(200, json=STK_PUSH_OK)}, token_delay=0.05)
    results: list[str] = []
    async with AsyncDaraja(
        transport=httpx.MockTransport(fake.async_handler), **client_kwargs(clock)
    ) as client:

        async def push() -> None:
            results.append((await client.stk_push("0708374149", 10, "INV0042")).checkout_request_id)

        async with anyio.create_task_group() as tg:
            for _ in range(200):
                tg.start_soon(push)
    assert len(results) == 200
    assert fake.tokens_issued == 1
    assert len(fake.paths(OAUTH)) == 1
    assert len(fake.paths(STK)) == 200


def test_16_threads_on_one_sync_client_fetch_one_token(clock: FrozenClock) -> None:
    fake = FakeDaraja(routes={STK: httpx.Response(200, json=STK_PUSH_OK)}, token_delay=0.05)
    transport = httpx.MockTransport(fake.sync_handler)
    with (
        Daraja(transport=transport, **client_kwargs(clock)) as client,
        ThreadPoolExecutor(max_workers=16) as pool,
    ):
        futures = [pool.submit(client.stk_push, "0708374149", 10, "INV0042") for _ in range(64)]
        ids = [f.result().checkout_request_id for f in futures]
    assert len(ids) == 64
    assert fake.tokens_issued == 1
    assert len(fake.paths(OAUTH)) == 1


async def test_concurrent_refresh_after_expiry_is_single_flight(clock: FrozenClock) -> None:
    fake = FakeDaraja(routes={STK: httpx.Response(200, json=STK_PUSH_OK)}, token_delay=0.02)
    async with AsyncDaraja(
        transport=httpx.MockTransport(fake.async_handler), **client_kwargs(clock)
    ) as client:
        await client.stk_push("0708374149", 10, "INV0042")
        fake.revoke_all()
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(client.stk_push, "0708374149", 10, "INV0042")
    assert fake.tokens_issued == 2


# -- logs -----------------------------------------------------------------------------------


async def test_secrets_and_phones_never_reach_debug_logs(
    face: Face, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pesa")
    face.fake.routes[QUERY] = [
        httpx.ReadTimeout("t"),
        httpx.Response(
            500,
            json={
                "requestId": "x",
                "errorCode": "500.001.1001",
                "errorMessage": "The transaction is being processed",
            },
        ),
    ]
    await face("stk_push", "0708374149", 10, "INV0042")
    await face("b2c_payment", "0708374149", 10, "Refund 1234")
    await face("stk_query", "ws_CO_1")
    face.fake.revoke_all()
    await face("stk_push", "0110123456", 10, "INV0042")
    text = caplog.text
    assert "POST /mpesa/stkpush/v1/processrequest" in text  # debug logging did happen
    assert "retrying stk_query" in text
    for secret in (
        SANDBOX_PASSKEY,
        CONSUMER_SECRET,
        "precomputed-credential-xyz",
        "c9SQxWWhmdVRlyh0zh8gZDTkubVF",
        "254708374149",
        "254110123456",
        "0708374149",
    ):
        assert secret not in text, secret
    import base64

    password = base64.b64encode(f"174379{SANDBOX_PASSKEY}20160216165627".encode()).decode()
    assert password not in text


def test_in_memory_store_only_discards_the_refused_token(clock: FrozenClock) -> None:
    from pesa.client import AccessToken

    store = InMemoryTokenStore()
    store.set("k", AccessToken("new", clock.now()))
    store.discard("k", "old")
    assert store.get("k") is not None
    store.discard("k", "new")
    assert store.get("k") is None
