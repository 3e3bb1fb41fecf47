"""Named accounts: the configuration (every problem at once, secrets kept secret) and a real
gateway pushing, querying and listing on the account each call names."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pesa import Accounts, ConfigurationError, Settings, ValidationError
from pesa.emulator import SANDBOX_PASSKEY, Emulator, EmulatorConfig
from pesa.gateway import check_settings
from pesa.gateway._accounts import effective_accounts
from pesa.testing import RunningGateway, run_gateway

from .conftest import API_KEY, gateway_settings

PAYBILL_PASSKEY = "paybill-passkey-9f8e7d6c5b4a"
INITIATOR_SECRET = "Initiator-Secret-7731!"
CONSUMER_SECRET = "consumer-secret-of-the-payouts-app"

ACCOUNTS_TOML = """
# the accounts of one business
default = "paybill"

[accounts.paybill]
shortcode = "600997"
passkey = { env = "TEST_PAYBILL_PASSKEY" }

[accounts.shop]
extends = "paybill"
till = 5123456

[accounts.hq]
shortcode = "174379"
passkey = "SANDBOX_PASSKEY"

[accounts.payouts]
shortcode = "600000"
consumer_key = "payouts-app"
consumer_secret = { file = "payouts.secret" }
initiator_name = "testapi"
initiator_password = { env = "TEST_INITIATOR_PASSWORD" }
""".replace("SANDBOX_PASSKEY", SANDBOX_PASSKEY)

ENVIRON = {"TEST_PAYBILL_PASSKEY": PAYBILL_PASSKEY, "TEST_INITIATOR_PASSWORD": INITIATOR_SECRET}


def _settings(tmp_path: Path, text: str, **values: Any) -> Settings:
    path = tmp_path / "accounts.toml"
    path.write_text(text, encoding="utf-8")
    (tmp_path / "payouts.secret").write_text(CONSUMER_SECRET + "\n", encoding="utf-8")
    return Settings(_env_file=None, accounts_file=path, **values)


def _problems(err: pytest.ExceptionInfo[ConfigurationError]) -> list[str]:
    return [line.strip()[2:] for line in str(err.value).splitlines()[1:]]


class TestConfiguration:
    def test_the_single_account_variables_are_the_default_account(self) -> None:
        accounts = Accounts.from_settings(
            Settings(_env_file=None, shortcode="600997", passkey="pk", initiator_name="api")
        )
        assert list(accounts) == ["default"]
        assert accounts.default.shortcode == "600997"
        assert accounts.default.can_push
        assert not accounts.default.has_initiator
        assert accounts.resolve(None) is accounts.default

    def test_a_file_of_accounts_with_inheritance_and_secret_references(
        self, tmp_path: Path
    ) -> None:
        accounts = Accounts.from_settings(_settings(tmp_path, ACCOUNTS_TOML), environ=ENVIRON)
        assert list(accounts) == ["paybill", "shop", "hq", "payouts"]
        assert accounts.default_name == "paybill"
        shop = accounts["shop"]
        assert (shop.shortcode, shop.till) == ("600997", "5123456")
        assert shop.passkey is not None and shop.passkey.get_secret_value() == PAYBILL_PASSKEY
        payouts = accounts["payouts"]
        assert payouts.has_initiator and not payouts.can_push
        assert payouts.consumer_secret is not None
        assert payouts.consumer_secret.get_secret_value() == CONSUMER_SECRET
        # C2B payments to the till are the shop's; to the shortcode, the PayBill's.
        assert accounts.for_shortcode("5123456") is shop
        assert accounts.for_shortcode("600997") is accounts["paybill"]
        assert accounts.for_shortcode("999999") is None

    def test_every_problem_is_reported_at_once(self, tmp_path: Path) -> None:
        text = """
default = "missing"
colour = "blue"

[accounts.a]
shortcode = "12"
passkey = "pk"
consumer_key = "only-the-key"
c2b_version = 3

[accounts.b]
extends = "nobody"
shortcde = "600997"
initiator_password = { env = "NOT_SET_ANYWHERE" }
c2b_response_type = "completed"

[accounts."bad name!"]
shortcode = "600997"
"""
        with pytest.raises(ConfigurationError) as err:
            Accounts.from_settings(_settings(tmp_path, text), environ={})
        problems = _problems(err)
        expected = [
            "colour: unknown key",
            "accounts.bad name!: the name must be",
            "accounts.b.shortcde: unknown key",
            "accounts.b.extends: 'nobody' is not an account",
            "accounts.a.shortcode: must be a shortcode of 5 to 7 digits",
            "accounts.a.c2b_version: must be 1 or 2",
            "accounts.a: consumer_key is set but consumer_secret is not",
            "accounts.a: passkey is set but shortcode is not",
            "accounts.b.initiator_password: the variable NOT_SET_ANYWHERE is not set",
            "accounts.b.c2b_response_type: must be 'Completed' or 'Cancelled'",
            "default: 'missing' is not an account",
        ]
        for start in expected:
            assert any(p.startswith(start) for p in problems), (start, problems)
        assert str(err.value).startswith(f"PESA_ACCOUNTS_FILE ({tmp_path / 'accounts.toml'})")

    def test_secrets_never_appear_in_errors_or_representations(self, tmp_path: Path) -> None:
        accounts = Accounts.from_settings(_settings(tmp_path, ACCOUNTS_TOML), environ=ENVIRON)
        shown = repr(accounts) + "".join(repr(a) + str(a) for a in accounts.values())
        shown += json.dumps(accounts.describe())
        for secret in (PAYBILL_PASSKEY, INITIATOR_SECRET, CONSUMER_SECRET, SANDBOX_PASSKEY):
            assert secret not in shown
        broken = ACCOUNTS_TOML.replace('shortcode = "600000"', 'shortcode = "6"')
        with pytest.raises(ConfigurationError) as err:
            Accounts.from_settings(_settings(tmp_path, broken), environ=ENVIRON)
        for secret in (PAYBILL_PASSKEY, INITIATOR_SECRET, CONSUMER_SECRET, SANDBOX_PASSKEY):
            assert secret not in str(err.value)

    def test_the_default_is_the_variables_account_or_the_only_one(self, tmp_path: Path) -> None:
        one = '[accounts.solo]\nshortcode = "600997"\n'
        assert Accounts.from_settings(_settings(tmp_path, one)).default_name == "solo"
        with_env = Accounts.from_settings(_settings(tmp_path, one, shortcode="174379"))
        assert list(with_env) == ["default", "solo"]
        assert with_env.default_name == "default"
        two = one + '[accounts.duo]\nshortcode = "600000"\n'
        with pytest.raises(ConfigurationError, match="none is the default"):
            Accounts.from_settings(_settings(tmp_path, two))
        clash = '[accounts.default]\nshortcode = "600000"\n'
        with pytest.raises(ConfigurationError, match="belongs to the account of the PESA_"):
            Accounts.from_settings(_settings(tmp_path, clash, shortcode="174379"))

    def test_files_that_are_not_toml_or_not_there_are_one_clear_problem(
        self, tmp_path: Path
    ) -> None:
        with pytest.raises(ConfigurationError, match="not valid TOML"):
            Accounts.from_settings(_settings(tmp_path, "[accounts.a\n"))
        missing = Settings(_env_file=None, accounts_file=tmp_path / "nope.toml")
        with pytest.raises(ConfigurationError, match="cannot read"):
            Accounts.from_settings(missing)

    def test_c2b_registration_belongs_to_one_account_and_is_not_inherited(
        self, tmp_path: Path
    ) -> None:
        text = """
default = "a"
[accounts.a]
shortcode = "600997"
c2b_register = true
[accounts.b]
extends = "a"
till = "5123456"
"""
        accounts = Accounts.from_settings(_settings(tmp_path, text))
        assert accounts["a"].c2b_register and not accounts["b"].c2b_register
        twice = text + '[accounts.c]\nshortcode = "600997"\nc2b_register = true\n'
        with pytest.raises(ConfigurationError, match="already registers C2B URLs"):
            Accounts.from_settings(_settings(tmp_path, twice))

    def test_an_unknown_account_name_is_a_validation_error_naming_the_choices(self) -> None:
        accounts = Accounts.from_settings(Settings(_env_file=None))
        with pytest.raises(ValidationError, match="account: must be one of default"):
            accounts.resolve("payouts")

    def test_real_environments_need_every_accounts_credentials(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("TEST_PAYBILL_PASSKEY", PAYBILL_PASSKEY)
        monkeypatch.setenv("TEST_INITIATOR_PASSWORD", INITIATOR_SECRET)
        settings = _settings(
            tmp_path,
            ACCOUNTS_TOML,
            env="sandbox",
            api_key="k" * 20,
            callback_token="t" * 20,
            public_url="https://pay.example.com",
        )
        with pytest.raises(ConfigurationError) as err:
            check_settings(settings)
        problems = _problems(err)
        assert len(problems) == 3  # paybill, shop and hq have no app; payouts has one
        assert all("consumer_key, consumer_secret are required" in p for p in problems)

    def test_the_emulator_fills_in_what_a_fresh_checkout_lacks(self) -> None:
        accounts = effective_accounts(Settings(_env_file=None, env="emulator"))
        default = accounts.default
        assert default.shortcode == "174379" and default.can_push
        assert default.consumer_key is not None


# -- a real gateway with four accounts ----------------------------------------------------


@pytest.fixture
def accounts_gateway(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RunningGateway]:
    monkeypatch.setenv("TEST_PAYBILL_PASSKEY", PAYBILL_PASSKEY)
    monkeypatch.setenv("TEST_INITIATOR_PASSWORD", INITIATOR_SECRET)
    path = tmp_path / "accounts.toml"
    path.write_text(ACCOUNTS_TOML, encoding="utf-8")
    (tmp_path / "payouts.secret").write_text(CONSUMER_SECRET, encoding="utf-8")
    emulator = Emulator(
        EmulatorConfig(
            stk_delay=0.1,
            seed=11,
            passkeys={"600997": PAYBILL_PASSKEY, "174379": SANDBOX_PASSKEY},
        )
    )
    settings = gateway_settings(database_url, accounts_file=path)
    with run_gateway(settings, emulator=emulator) as running:
        yield running


@pytest.fixture
async def accounts_api(accounts_gateway: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(
        base_url=accounts_gateway.url, headers=headers, timeout=10
    ) as client:
        yield client


async def _pay(api: httpx.AsyncClient, phone: str, account: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "phone": phone,
        "amount": 25,
        "account_reference": "ACC1",
        "description": "accounts",
    }
    if account is not None:
        body["account"] = account
    response = await api.post("/v1/payments", json=body)
    assert response.status_code == 201, response.text
    payment: dict[str, Any] = response.json()
    return payment


async def _settled(api: httpx.AsyncClient, payment_id: str) -> dict[str, Any]:
    for _ in range(200):
        payment: dict[str, Any] = (await api.get(f"/v1/payments/{payment_id}")).json()
        if payment["status"] in ("succeeded", "failed", "rejected"):
            return payment
        await asyncio.sleep(0.05)
    raise AssertionError(f"payment {payment_id} never settled: {payment}")


@pytest.mark.slow
async def test_each_call_pushes_and_queries_on_the_account_it_names(
    accounts_gateway: RunningGateway, accounts_api: httpx.AsyncClient
) -> None:
    api = accounts_api
    # Distinct phones: the emulator keeps one open prompt per subscriber, as Daraja does.
    default = await _pay(api, "254711000101", None)
    shop = await _pay(api, "254711000102", "shop")
    # The hq payment's callback is lost: only an STK query on hq's shortcode settles it.
    hq = await _pay(api, "254700000404", "hq")
    assert (default["account"], shop["account"], hq["account"]) == ("paybill", "shop", "hq")
    for payment in (default, shop, hq):
        assert (await _settled(api, payment["id"]))["status"] == "succeeded"

    log = (await api.get(f"{accounts_gateway.emulator_url}/__emulator__/requests")).json()
    pushes = {
        r["response"]["CheckoutRequestID"]: r["body"]
        for r in log
        if r["path"].endswith("/stkpush/v1/processrequest") and r["status_code"] == 200
    }
    sent = {p["account"]: pushes[p["checkout_request_id"]] for p in (default, shop, hq)}
    assert (sent["paybill"]["BusinessShortCode"], sent["paybill"]["PartyB"]) == (
        "600997",
        "600997",
    )
    assert sent["paybill"]["TransactionType"] == "CustomerPayBillOnline"
    assert (sent["shop"]["BusinessShortCode"], sent["shop"]["PartyB"]) == ("600997", "5123456")
    assert sent["shop"]["TransactionType"] == "CustomerBuyGoodsOnline"
    assert sent["hq"]["BusinessShortCode"] == "174379"
    queries = [r for r in log if r["path"].endswith("/stkpushquery/v1/query")]
    assert queries and all(
        q["body"]["BusinessShortCode"] == "174379"
        for q in queries
        if q["body"]["CheckoutRequestID"] == hq["checkout_request_id"]
    )
    assert all(q["status_code"] in (200, 500) for q in queries)  # never a wrong password

    only_shop = (await api.get("/v1/payments", params={"account": "shop"})).json()["data"]
    assert [p["id"] for p in only_shop] == [shop["id"]]


@pytest.mark.slow
async def test_accounts_are_listed_without_secrets_and_bad_names_are_422(
    accounts_api: httpx.AsyncClient,
) -> None:
    api = accounts_api
    listing = await api.get("/v1/accounts")
    assert listing.status_code == 200
    data = listing.json()["data"]
    assert [(a["name"], a["default"], a["stk"], a["initiator"]) for a in data] == [
        # In the emulator the default account gets the public sandbox initiator.
        ("paybill", True, True, True),
        ("shop", False, True, False),
        ("hq", False, True, False),
        ("payouts", False, False, True),
    ]
    for secret in (PAYBILL_PASSKEY, INITIATOR_SECRET, CONSUMER_SECRET, SANDBOX_PASSKEY):
        assert secret not in listing.text
    body = {"phone": "0708374149", "amount": 10, "account_reference": "A", "description": "d"}
    for account, rule in (
        ("nope", "must be one of paybill, shop, hq, payouts"),
        ("payouts", "must be an account that takes STK pushes (a shortcode and its passkey)"),
    ):
        refused = await api.post("/v1/payments", json={**body, "account": account})
        assert refused.status_code == 422
        error = refused.json()["error"]
        assert (error["field"], error["rule"]) == ("account", rule)
    assert (await api.get("/v1/payments")).json()["data"] == []
