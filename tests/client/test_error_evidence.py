"""Errors carry the evidence: operation, redacted request, status, headers, Daraja's requestId."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import httpx
import pytest

import pesa
from pesa import (
    AuthenticationError,
    BadRequestError,
    OutcomeUnknownError,
    PesaError,
    RedactedRequest,
    ServerError,
    TransportError,
    UnexpectedResponseError,
)

from .conftest import CONSUMER_SECRET, SANDBOX_PASSKEY, Face, error_body

STK = "/mpesa/stkpush/v1/processrequest"
QUERY = "/mpesa/stkpushquery/v1/query"
B2C = "/mpesa/b2c/v3/paymentrequest"
SRC = Path(pesa.__file__).parent


async def test_a_refusal_carries_operation_redacted_request_status_headers_and_request_id(
    face: Face,
) -> None:
    face.fake.routes[STK] = httpx.Response(
        400,
        json=error_body("400.002.02", "Bad Request - Invalid Amount", "req-42"),
        headers={"X-Trace": "abc"},
    )
    with pytest.raises(BadRequestError) as info:
        await face("stk_push", "0708374149", 10, "INV0042")
    err = info.value
    assert (err.status_code, err.error_code, err.request_id) == (400, "400.002.02", "req-42")
    assert err.operation == "stk_push"
    assert err.headers["x-trace"] == "abc"
    assert isinstance(err.request, RedactedRequest)
    assert err.request.method == "POST" and err.request.url.endswith(STK)
    assert err.request.body["AccountReference"] == "INV0042"
    assert err.request.body["Password"] == "[redacted]"
    assert err.request.headers["authorization"] == "[redacted]"
    everything = repr(err.request) + str(err) + repr(err.__dict__)
    assert "Bearer tok" not in everything and "Password': 'MTc0" not in everything
    assert SANDBOX_PASSKEY not in everything


async def test_a_refused_b2c_hides_the_security_credential(face: Face) -> None:
    face.fake.routes[B2C] = httpx.Response(400, json=error_body("400.002.02", "Invalid"))
    with pytest.raises(BadRequestError) as info:
        await face("b2c_payment", "0708374149", 100, "Salary")
    assert info.value.request is not None
    assert info.value.request.body["SecurityCredential"] == "[redacted]"
    assert "precomputed-credential-xyz" not in repr(info.value.request)


async def test_an_unreadable_2xx_to_a_query_is_its_own_error_after_retries(face: Face) -> None:
    face.fake.routes[QUERY] = httpx.Response(200, text="<html>gateway page</html>")
    with pytest.raises(UnexpectedResponseError) as info:
        await face("stk_query", "ws_CO_1")
    err = info.value
    assert not isinstance(err, ServerError)
    assert err.status_code == 200 and "gateway page" in err.body
    assert err.operation == "stk_query" and err.request is not None
    assert len(face.fake.paths(QUERY)) == 3  # a safe request: retried


async def test_an_unreadable_2xx_to_a_push_is_outcome_unknown_with_the_answer_as_cause(
    face: Face,
) -> None:
    face.fake.routes[STK] = httpx.Response(
        200, json={"unexpected": True}, headers={"X-Request-Id": "edge-1"}
    )
    with pytest.raises(OutcomeUnknownError) as info:
        await face("stk_push", "0708374149", 10, "INV0042")
    err = info.value
    assert isinstance(err.__cause__, UnexpectedResponseError)
    assert err.status_code == 200 and err.headers["x-request-id"] == "edge-1"
    assert err.request.body["Password"] == "[redacted]"
    assert len(face.fake.paths(STK)) == 1  # never re-sent


async def test_a_transport_error_names_the_operation_and_the_url(face: Face) -> None:
    face.fake.routes[QUERY] = httpx.ReadTimeout("slow")
    with pytest.raises(TransportError) as info:
        await face("stk_query", "ws_CO_1")
    err = info.value
    assert err.operation == "stk_query"
    assert err.request is not None and err.request.url.endswith(QUERY)
    assert QUERY in str(err)


async def test_a_refused_oauth_names_the_token_operation_without_the_basic_secret(
    face: Face,
) -> None:
    face.fake.oauth_responses.append(
        httpx.Response(400, json=error_body("400.008.01", "Invalid Authentication passed"))
    )
    with pytest.raises(AuthenticationError) as info:
        await face("stk_push", "0708374149", 10, "INV0042")
    err = info.value
    assert err.operation == "token" and err.request is not None
    assert err.request.headers["authorization"] == "[redacted]"
    assert CONSUMER_SECRET not in repr(err.__dict__)


def test_errors_survive_pickling_with_their_evidence() -> None:
    sent = RedactedRequest("POST", "https://x/y", {}, {"Amount": 1})
    err = BadRequestError(400, "400.002.02", "Invalid", "r-1", "{}", operation="op", request=sent)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.operation, copy.request, copy.request_id) == ("op", sent, "r-1")
    assert str(copy) == str(err)
    unknown = OutcomeUnknownError("stk_push", sent, "timeout", status_code=200)
    again = pickle.loads(pickle.dumps(unknown))
    assert again.request == sent and again.status_code == 200 and str(again) == str(unknown)


def test_internal_control_flow_exceptions_are_not_pesa_errors() -> None:
    from pesa.client._token import TokenFetchError

    assert not issubclass(TokenFetchError, PesaError)
    for module in SRC.rglob("*.py"):
        tree = ast.parse(module.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name.startswith("_"):
                bases = {ast.unparse(b) for b in node.bases}
                assert not bases & {"PesaError", "LedgerError"}, f"{module}: {node.name}"


def _validator(function: ast.AST) -> bool:
    decorators = getattr(function, "decorator_list", [])
    return any("validator" in ast.unparse(d) for d in decorators)


def test_no_bare_runtime_or_value_error_is_raised_outside_the_tree() -> None:
    """Pydantic validators raise ValueError by protocol (Settings turns them into ours)."""
    found: list[str] = []
    for module in SRC.rglob("*.py"):
        tree = ast.parse(module.read_text("utf-8"))
        parents: dict[ast.AST, ast.AST] = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node
        for node in ast.walk(tree):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            call = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            if ast.unparse(call) not in ("RuntimeError", "ValueError"):
                continue
            scope: ast.AST | None = node
            while scope is not None and not isinstance(scope, ast.FunctionDef):
                scope = parents.get(scope)
            if scope is not None and _validator(scope):
                continue
            found.append(f"{module.relative_to(SRC)}:{node.lineno}")
    assert not found, found
