"""Scenario 5: hostile input against a running gateway.

- forged callbacks (wrong path token, a source outside the IP allowlist, an id we never
  issued, a success for another amount or phone, another MerchantRequestID) are refused,
  recorded, and change no payment, while the genuine callback is applied;
- hypothesis bodies against ``POST /callbacks/{token}/stk``: never a 5xx, every body under
  the right token stored raw, and a payment changes only on a 200;
- schemathesis against the gateway's OpenAPI (every REST operation, valid and invalid
  data): never a 5xx, and a refused ``POST /v1/payments`` writes no payment.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from pesa.config import Settings
from pesa.testing import stk_callback_payload, stk_failure_payload
from pesa.testing._gateway import run_gateway  # not re-exported by pesa.testing yet

from ._harness import size
from ._report import Recorder
from .test_hostile_input import TARGET, any_body, mutated_callback

SCENARIO = "5. Hostile input"
API_KEY = "hostile-api-key-0f1e2d3c"
TOKEN = "hostile-callback-token-9a8b7c6d"
ALLOWED_IP = "196.201.214.200"
FOREIGN_IP = "203.0.113.66"
EXAMPLES = size(100, 800)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(size(300, 7_200))]

_phones = itertools.count(254713000000)


class Gateway:
    """The running gateway (thread) and an authenticated client for its REST API."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.api = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
        )

    def pending_payment(self, amount: int = 10) -> dict[str, Any]:
        """A payment Daraja (the mounted emulator) accepted; its customer never answers."""
        response = self.api.post(
            "/v1/payments",
            json={
                "phone": str(next(_phones)),
                "amount": amount,
                "account_reference": "HOSTILE",
                "description": "Hostile input",
            },
        )
        assert response.status_code == 201, response.text
        payment: dict[str, Any] = response.json()
        assert payment["status"] == "pending", payment
        return payment

    def payment(self, payment_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self.api.get(f"/v1/payments/{payment_id}").json()
        return data

    def gauges(self, family: str) -> int:
        """The sum of a metrics family (``pesa_callbacks``, ``pesa_payments``)."""
        text = self.api.get("/metrics").text
        pattern = re.compile(rf"^{family}(?:\{{[^}}]*\}})? (\d+(?:\.\d+)?)$", re.MULTILINE)
        return int(sum(float(v) for v in pattern.findall(text)))

    def counter(self, name: str, outcome: str) -> int:
        text = self.api.get("/metrics").text
        match = re.search(rf'^{name}\{{outcome="{outcome}"\}} (\d+(?:\.\d+)?)$', text, re.M)
        return int(float(match.group(1))) if match else 0

    def callback(
        self, body: bytes, *, token: str = TOKEN, source: str = ALLOWED_IP, **headers: str
    ) -> httpx.Response:
        return httpx.post(
            f"{self.url}/callbacks/{token}/stk",
            content=body,
            headers={"X-Forwarded-For": source, "Content-Type": "application/json", **headers},
            timeout=30,
        )


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder: Path = tmp_path_factory.mktemp("hostile")
    config = Settings(
        env="emulator",
        database_url=f"sqlite:///{folder / 'gateway.db'}",
        api_key=API_KEY,
        callback_token=TOKEN,
        run_workers=False,
        emulator_stk_delay=86_400.0,
        callback_allowlist="enforce",
        callback_allowed_ips=(ALLOWED_IP,),
        trusted_proxies=("127.0.0.1",),
    )
    with run_gateway(config) as running:
        gateway = Gateway(running.url)
        try:
            yield gateway
        finally:
            gateway.api.close()


def success_for(payment: dict[str, Any], **changes: Any) -> bytes:
    fields: dict[str, Any] = {
        "checkout_request_id": payment["checkout_request_id"],
        "merchant_request_id": payment["merchant_request_id"],
        "amount": payment["amount"],
        "phone": int(payment["phone"]),
        "receipt": "RH" + payment["id"][-8:].upper(),
    }
    fields.update(changes)
    return json.dumps(stk_callback_payload(**fields)).encode()


def test_forged_callbacks_are_refused_and_recorded_and_the_genuine_one_applies(
    gateway: Gateway, recorder: Recorder
) -> None:
    payment = gateway.pending_payment(amount=10)
    forgeries: dict[str, tuple[bytes, dict[str, str]]] = {
        "wrong token": (success_for(payment), {"token": "not-the-token"}),
        "source not allowlisted": (success_for(payment), {"source": FOREIGN_IP}),
        "unknown CheckoutRequestID": (
            success_for(payment, checkout_request_id="ws_CO_29112026000000000700000000"),
            {},
        ),
        "amount differs": (success_for(payment, amount=1), {}),
        "phone differs": (success_for(payment, phone=254799999999), {}),
        "other MerchantRequestID": (success_for(payment, merchant_request_id="29115-1-1"), {}),
        "failure for another merchant id": (
            json.dumps(
                stk_failure_payload(
                    checkout_request_id=payment["checkout_request_id"],
                    merchant_request_id="29115-1-1",
                )
            ).encode(),
            {},
        ),
    }
    seen: Counter[str] = Counter()
    refused_without_storing = {"wrong token", "source not allowlisted"}
    for name, (body, options) in forgeries.items():
        stored_before = gateway.gauges("pesa_callbacks")
        response = gateway.callback(body, **options)
        stored = gateway.gauges("pesa_callbacks") - stored_before
        after = gateway.payment(payment["id"])
        seen["forged_sent"] += 1
        seen["forged_refused"] += response.status_code >= 400
        seen["forged_stored_raw"] += stored
        seen["payment_changed"] += after["status"] != "pending" or after["receipt"] is not None
        expected_store = 0 if name in refused_without_storing else 1
        seen["wrong_storage"] += stored != expected_store
    seen["forbidden_token_counted"] = gateway.counter(
        "pesa_callbacks_received_total", "forbidden_token"
    )
    seen["forbidden_source_counted"] = gateway.counter(
        "pesa_callbacks_received_total", "forbidden_source"
    )
    genuine = gateway.callback(success_for(payment))
    final = gateway.payment(payment["id"])
    counts = {
        "forged_sent": seen["forged_sent"],
        "forged_refused": seen["forged_refused"],
        "forged_stored_raw": seen["forged_stored_raw"],
        "forbidden_token_counted": seen["forbidden_token_counted"],
        "forbidden_source_counted": seen["forbidden_source_counted"],
        "payment_changed_by_forgery": seen["payment_changed"],
        "wrong_storage": seen["wrong_storage"],
        "genuine_applied": int(genuine.status_code == 200 and final["status"] == "succeeded"),
        "expected_genuine": 1,
    }
    result = recorder.record(
        SCENARIO,
        "forged callbacks (gateway)",
        counts,
        must_be_zero=("payment_changed_by_forgery", "wrong_storage"),
        must_equal=(("forged_refused", "forged_sent"), ("genuine_applied", "expected_genuine")),
        about=(
            "A gateway with the IP allowlist enforced (proxy headers trusted from loopback) "
            "receives forged callbacks for a pending payment, then the genuine one. A wrong "
            "token or source is refused before the body is read (counted in the metrics, "
            "nothing stored); every other forgery is stored raw and refused."
        ),
    )
    assert result.passed, result.failures
    assert counts["forbidden_token_counted"] >= 1 and counts["forbidden_source_counted"] >= 1


def test_hostile_bodies_on_the_callback_route_never_5xx_and_change_only_what_they_should(
    gateway: Gateway, recorder: Recorder
) -> None:
    seen: Counter[str] = Counter()

    @FUZZ
    @given(
        body=st.integers(0, 2).flatmap(
            lambda k: any_body if k == 0 else mutated_callback(checkout_request_id=TARGET)
        ),
        content_type=st.sampled_from(["application/json", "text/plain", "application/xml"]),
    )
    def check(body: bytes, content_type: str) -> None:
        payment = gateway.pending_payment() if TARGET.encode() in body else None
        if payment is not None:
            # The mutated callback's placeholders become this payment's ids and phone.
            for placeholder, value in (
                (TARGET, payment["checkout_request_id"]),
                ("mr-fuzz", payment["merchant_request_id"]),
                ("254711000001", payment["phone"]),
            ):
                body = body.replace(placeholder.encode(), value.encode())
        before = gateway.gauges("pesa_callbacks")
        response = gateway.callback(body, **{"Content-Type": content_type})
        seen[f"http_{response.status_code}"] += 1
        seen["server_errors"] += response.status_code >= 500
        seen["not_stored"] += gateway.gauges("pesa_callbacks") != before + 1
        if payment is not None:
            after = gateway.payment(payment["id"])
            changed = after["status"] != "pending"
            seen["changed_without_200"] += changed and response.status_code != 200
            seen["applied"] += changed
        assert response.status_code < 500, response.text

    try:
        check()
    finally:
        statuses = {k: v for k, v in sorted(seen.items()) if k.startswith("http_")}
        result = recorder.record(
            SCENARIO,
            "callback route (hypothesis, gateway)",
            {
                "bodies_tried": sum(statuses.values()),
                **statuses,
                "applied": seen["applied"],
                "server_errors": seen["server_errors"],
                "not_stored": seen["not_stored"],
                "changed_without_200": seen["changed_without_200"],
            },
            must_be_zero=("server_errors", "not_stored", "changed_without_200"),
            about=(
                "Hypothesis bodies (random bytes and JSON, and real callbacks with fields "
                "replaced, removed or retyped, two thirds of them naming a fresh pending "
                "payment) POSTed to the callback route under the right token."
            ),
        )
    assert result.passed, result.failures


def test_schemathesis_finds_no_server_error_and_refused_creates_write_nothing(
    gateway: Gateway, recorder: Recorder
) -> None:
    schema = schemathesis.openapi.from_dict(gateway.api.get("/openapi.json").json())
    session = requests.Session()
    seen: Counter[str] = Counter()
    mismatches: Counter[str] = Counter()
    auth = st.sampled_from(
        [{"Authorization": f"Bearer {API_KEY}"}] * 4 + [{"Authorization": "Bearer wrong"}, {}]
    )
    modes = st.sampled_from([GenerationMode.POSITIVE, GenerationMode.NEGATIVE])

    @FUZZ
    @given(data=st.data(), headers=auth, mode=modes)
    def check(data: st.DataObject, headers: dict[str, str], mode: GenerationMode) -> None:
        case = data.draw(schema.as_strategy(generation_mode=mode))
        writes = case.method.upper() == "POST" and case.path == "/v1/payments"
        before = gateway.gauges("pesa_payments") if writes else 0
        response = case.call(base_url=gateway.url, session=session, headers=headers)
        seen[f"{case.method.upper()} {case.path}"] += 1
        seen[f"http_{response.status_code // 100}xx"] += 1
        if writes and response.status_code >= 400:
            seen["written_on_refusal"] += gateway.gauges("pesa_payments") != before
        documented = set(case.operation.definition.raw.get("responses", {}))
        if str(response.status_code) not in documented and "default" not in documented:
            mismatches[f"{response.status_code} undocumented on {case.path}"] += 1
        seen["server_errors"] += response.status_code >= 500
        assert response.status_code < 500, (case.as_curl_command(), response.text[:500])

    try:
        check()
    finally:
        session.close()
        operations = {k: v for k, v in seen.items() if " /" in k}
        result = recorder.record(
            SCENARIO,
            "REST API (schemathesis, gateway)",
            {
                "requests": sum(operations.values()),
                "operations_covered": len(operations),
                **{f"http_{n}xx": seen[f"http_{n}xx"] for n in (2, 4, 5)},
                "server_errors": seen["server_errors"],
                "written_on_refusal": seen["written_on_refusal"],
                "undocumented_status": sum(mismatches.values()),
            },
            must_be_zero=("server_errors", "written_on_refusal"),
            about=(
                f"schemathesis {schemathesis.__version__} cases (valid and invalid data) for "
                "every operation of the gateway's `/openapi.json`, with the right key, a wrong "
                "one or none. `undocumented_status` counts answers whose status the schema does "
                "not declare (reported, not failed): "
                + (", ".join(f"{k} ({v})" for k, v in sorted(mismatches.items())) or "none")
                + "."
            ),
        )
    assert result.passed, result.failures
