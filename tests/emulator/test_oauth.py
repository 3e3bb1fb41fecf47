"""OAuth, token expiry and invalidation, wrong verbs, unknown paths (in-process ASGI)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest

from pesa.emulator import Emulator, EmulatorConfig
from pesa.testing import FrozenClock

OAUTH = "/oauth/v1/generate"
BALANCE = "/mpesa/accountbalance/v1/query"
PUSH = "/mpesa/stkpush/v1/processrequest"


@pytest.fixture
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator(EmulatorConfig(seed=3)) as emulator:
        yield emulator


def _client(emulator: Emulator) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(emulator.app), base_url="http://d")


async def _token(http: httpx.AsyncClient, key: str = "k", secret: str = "s") -> httpx.Response:
    return await http.get(OAUTH, params={"grant_type": "client_credentials"}, auth=(key, secret))


async def test_token_is_issued_with_string_expires_in(emulator: Emulator) -> None:
    async with _client(emulator) as http:
        response = await _token(http)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "expires_in"}
    assert body["expires_in"] == "3599"
    assert len(body["access_token"]) == 28


async def test_missing_basic_auth_is_invalid_authentication(emulator: Emulator) -> None:
    async with _client(emulator) as http:
        response = await http.get(OAUTH, params={"grant_type": "client_credentials"})
        garbage = await http.get(
            OAUTH,
            params={"grant_type": "client_credentials"},
            headers={"Authorization": "Basic %%"},
        )
    for r in (response, garbage):
        assert r.status_code == 400
        assert r.json()["errorCode"] == "400.008.01"
        assert r.json()["errorMessage"] == "Invalid Authentication passed"


@pytest.mark.parametrize("grant", [None, "client_credentials ", "password"])
async def test_wrong_grant_type_is_refused(emulator: Emulator, grant: str | None) -> None:
    params = {} if grant is None else {"grant_type": grant}
    async with _client(emulator) as http:
        response = await http.get(OAUTH, params=params, auth=("k", "s"))
    assert response.status_code == 400
    assert response.json()["errorCode"] == "400.008.02"
    assert response.json()["errorMessage"] == "Invalid grant type passed"


async def test_post_to_oauth_is_method_not_allowed(emulator: Emulator) -> None:
    async with _client(emulator) as http:
        response = await http.post(OAUTH, auth=("k", "s"))
    assert response.status_code == 405
    assert response.json()["errorCode"] == "405.001"
    assert response.json()["errorMessage"] == "POST Method Not Allowed"


@pytest.mark.parametrize(
    ("config", "status", "code"),
    [
        (EmulatorConfig(wrong_method_error="405.001"), 405, "405.001"),
        (EmulatorConfig(wrong_method_error="404.001.04"), 404, "404.001.04"),
    ],
)
async def test_get_on_a_post_endpoint_is_refused_as_configured(
    config: EmulatorConfig, status: int, code: str
) -> None:
    async with Emulator(config) as emulator, _client(emulator) as http:
        response = await http.get(PUSH)
    assert response.status_code == status
    assert response.json()["errorCode"] == code


async def test_missing_or_unknown_token_is_invalid_access_token(emulator: Emulator) -> None:
    async with _client(emulator) as http:
        missing = await http.post(PUSH, json={})
        unknown = await http.post(PUSH, json={}, headers={"Authorization": "Bearer nope"})
        c2b = await http.post("/mpesa/c2b/v1/registerurl", json={})
    for r in (missing, unknown):
        assert r.status_code == 404
        assert r.json()["errorCode"] == "404.001.03"
        assert r.json()["errorMessage"] == "Invalid Access Token"
    assert c2b.status_code == 400
    assert c2b.json()["errorCode"] == "400.003.01"


async def test_token_expires_after_expires_in_on_the_emulators_clock() -> None:
    # The emulator reads token lifetimes from its injected clock: an hour passes in a call.
    clock = FrozenClock()
    config = EmulatorConfig(token_lifetime=3600)
    async with Emulator(config, clock=clock) as emulator, _client(emulator) as http:
        token = (await _token(http)).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        fresh = await http.post(BALANCE, json={}, headers=headers)
        assert fresh.status_code == 400  # the token passed; the empty body did not
        clock.advance(seconds=3599)
        still = await http.post(BALANCE, json={}, headers=headers)
        clock.advance(seconds=1)
        expired = await http.post(BALANCE, json={}, headers=headers)
    assert still.status_code == 400
    assert expired.status_code == 404
    assert expired.json()["errorCode"] == "404.001.03"


async def test_new_token_keeps_old_ones_valid_by_default(emulator: Emulator) -> None:
    async with _client(emulator) as http:
        first = (await _token(http)).json()["access_token"]
        await _token(http)
        response = await http.post(BALANCE, json={}, headers={"Authorization": f"Bearer {first}"})
    assert response.status_code == 400


async def test_new_token_can_invalidate_the_old_one() -> None:
    config = EmulatorConfig(invalidate_old_tokens=True)
    async with Emulator(config) as emulator, _client(emulator) as http:
        first = (await _token(http)).json()["access_token"]
        other_app = (await _token(http, key="other")).json()["access_token"]
        await _token(http)
        old = await http.post(BALANCE, json={}, headers={"Authorization": f"Bearer {first}"})
        other = await http.post(BALANCE, json={}, headers={"Authorization": f"Bearer {other_app}"})
    assert old.status_code == 404
    assert other.status_code == 400


async def test_strict_mode_accepts_only_the_configured_key_and_secret() -> None:
    config = EmulatorConfig(strict=True, consumer_key="key", consumer_secret="secret")
    async with Emulator(config) as emulator, _client(emulator) as http:
        good = await _token(http, "key", "secret")
        bad = await _token(http, "key", "wrong")
    assert good.status_code == 200
    assert bad.status_code == 400
    assert bad.json()["errorCode"] == "400.008.01"


async def test_strict_mode_can_answer_an_empty_400() -> None:
    config = EmulatorConfig(
        strict=True, consumer_key="key", consumer_secret="secret", oauth_bad_credentials="empty"
    )
    async with Emulator(config) as emulator, _client(emulator) as http:
        bad = await _token(http, "nope", "secret")
    assert bad.status_code == 400
    assert bad.content == b""


def test_strict_mode_without_credentials_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="strict mode needs consumer_key"):
        EmulatorConfig(strict=True)


async def test_unknown_path_is_resource_not_found(emulator: Emulator) -> None:
    async with _client(emulator) as http:
        response = await http.post("/mpesa/nothing/v1/here", json={})
    assert response.status_code == 404
    assert response.json()["errorCode"] == "404.001.01"


async def test_form_encoded_body_reads_as_invalid_shortcode(emulator: Emulator) -> None:
    token = emulator.issue_token()
    async with _client(emulator) as http:
        response = await http.post(
            PUSH, data={"BusinessShortCode": "174379"}, headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 400
    assert response.json()["errorMessage"] == "Bad Request - Invalid BusinessShortCode"


async def test_json_that_is_not_an_object_is_invalid_payload(emulator: Emulator) -> None:
    token = emulator.issue_token()
    async with _client(emulator) as http:
        response = await http.post(PUSH, json=[1, 2], headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 400
    assert response.json()["errorCode"] == "400.002.05"


async def test_routes_work_under_a_mount_prefix(emulator: Emulator) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    outer = Starlette(routes=[Mount("/emulator", app=emulator.app)])
    basic = base64.b64encode(b"k:s").decode()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(outer), base_url="http://gw"
    ) as http:
        token = await http.get(
            "/emulator/oauth/v1/generate?grant_type=client_credentials",
            headers={"Authorization": f"Basic {basic}"},
        )
        health = await http.get("/emulator/__emulator__/health")
    assert token.status_code == 200
    assert health.json()["status"] == "ok"
