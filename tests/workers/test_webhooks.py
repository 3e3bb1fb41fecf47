"""Webhook signatures: ``sign_webhook`` and ``pesa.verify_webhook`` (the Pesa-Signature header)."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pesa
from pesa import ValidationError, WebhookSignatureError, sign_webhook, verify_webhook

SECRET = "whsec_test_secret"
OLD_SECRET = "whsec_old_secret"
NOW = 1_767_225_600
BODY = json.dumps({"id": "evt_01", "type": "payment.succeeded", "data": {"amount": 10}}).encode()


def _expected(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def test_header_is_timestamp_and_hex_hmac_of_timestamp_dot_body() -> None:
    header = sign_webhook(BODY, SECRET, timestamp=NOW)
    assert header == f"t={NOW},v1={_expected(SECRET, NOW, BODY)}"


def test_several_secrets_give_one_v1_each_in_order() -> None:
    header = sign_webhook(BODY, [SECRET, OLD_SECRET], timestamp=NOW)
    assert header == (
        f"t={NOW},v1={_expected(SECRET, NOW, BODY)},v1={_expected(OLD_SECRET, NOW, BODY)}"
    )


def test_sign_uses_the_current_time_when_no_timestamp_is_given() -> None:
    header = sign_webhook(BODY, SECRET)
    timestamp = int(header.split(",")[0].removeprefix("t="))
    assert verify_webhook(BODY, header, SECRET, now=timestamp) is not None


def test_verify_is_exported_at_the_top_level() -> None:
    assert pesa.verify_webhook is verify_webhook
    assert issubclass(pesa.WebhookSignatureError, pesa.PesaError)


GOOD = sign_webhook(BODY, SECRET, timestamp=NOW)
ROTATED = sign_webhook(BODY, [SECRET, OLD_SECRET], timestamp=NOW)


@pytest.mark.parametrize(
    ("payload", "header", "secret", "now"),
    [
        pytest.param(BODY, GOOD, SECRET, NOW, id="good"),
        pytest.param(BODY.decode(), GOOD, SECRET, NOW, id="body-as-str"),
        pytest.param(BODY, GOOD, SECRET.encode(), NOW, id="secret-as-bytes"),
        pytest.param(BODY, GOOD, SECRET, NOW + 300, id="exactly-at-tolerance-old"),
        pytest.param(BODY, GOOD, SECRET, NOW - 300, id="exactly-at-tolerance-future"),
        pytest.param(BODY, ROTATED, SECRET, NOW, id="rotated-header-new-secret"),
        pytest.param(BODY, ROTATED, OLD_SECRET, NOW, id="rotated-header-old-secret"),
        pytest.param(BODY, GOOD, [OLD_SECRET, SECRET], NOW, id="receiver-holds-two-secrets"),
        pytest.param(
            BODY,
            f" t={NOW} , v1={_expected(SECRET, NOW, BODY)} ",
            SECRET,
            NOW,
            id="spaces-around-pairs",
        ),
        pytest.param(
            BODY,
            f"v0=abc,t={NOW},v1=00,v1={_expected(SECRET, NOW, BODY)}",
            SECRET,
            NOW,
            id="unknown-schemes-and-stale-signatures-ignored",
        ),
    ],
)
def test_valid_signatures_verify_and_return_the_event(
    payload: str | bytes, header: str, secret: str | bytes | list[str], now: int
) -> None:
    event = verify_webhook(payload, header, secret, now=now)
    assert event == json.loads(BODY)


@pytest.mark.parametrize(
    ("payload", "header", "secret", "now", "reason"),
    [
        pytest.param(BODY + b" ", GOOD, SECRET, NOW, "signature_mismatch", id="tampered-body"),
        pytest.param(
            BODY.replace(b"10", b"99"),
            GOOD,
            SECRET,
            NOW,
            "signature_mismatch",
            id="tampered-amount",
        ),
        pytest.param(BODY, GOOD, "whsec_wrong", NOW, "signature_mismatch", id="wrong-secret"),
        pytest.param(
            BODY,
            GOOD.replace(f"t={NOW}", f"t={NOW + 1}"),
            SECRET,
            NOW,
            "signature_mismatch",
            id="timestamp-changed-after-signing",
        ),
        pytest.param(BODY, GOOD, SECRET, NOW + 301, "timestamp_too_old", id="expired"),
        pytest.param(BODY, GOOD, SECRET, NOW - 301, "timestamp_in_future", id="future"),
        pytest.param(
            BODY,
            ROTATED,
            "whsec_third",
            NOW,
            "signature_mismatch",
            id="rotated-header-unknown-secret",
        ),
        pytest.param(BODY, "", SECRET, NOW, "malformed_header", id="empty-header"),
        pytest.param(BODY, "garbage", SECRET, NOW, "malformed_header", id="no-key-value"),
        pytest.param(
            BODY,
            f"v1={_expected(SECRET, NOW, BODY)}",
            SECRET,
            NOW,
            "malformed_header",
            id="no-timestamp",
        ),
        pytest.param(
            BODY,
            f"t=soon,v1={_expected(SECRET, NOW, BODY)}",
            SECRET,
            NOW,
            "malformed_header",
            id="timestamp-not-a-number",
        ),
        pytest.param(
            BODY,
            f"t=-5,v1={_expected(SECRET, NOW, BODY)}",
            SECRET,
            NOW,
            "malformed_header",
            id="negative-timestamp",
        ),
        pytest.param(
            BODY,
            f"t={NOW},t={NOW},v1={_expected(SECRET, NOW, BODY)}",
            SECRET,
            NOW,
            "malformed_header",
            id="two-timestamps",
        ),
        pytest.param(BODY, f"t={NOW}", SECRET, NOW, "no_signature", id="no-v1"),
        pytest.param(
            BODY,
            f"t={NOW},v2={_expected(SECRET, NOW, BODY)}",
            SECRET,
            NOW,
            "no_signature",
            id="only-unknown-scheme",
        ),
    ],
)
def test_bad_signatures_raise_with_a_reason(
    payload: bytes, header: str, secret: str, now: int, reason: str
) -> None:
    with pytest.raises(WebhookSignatureError) as info:
        verify_webhook(payload, header, secret, now=now)
    assert info.value.reason == reason
    # The message never echoes the secret.
    assert secret not in str(info.value)


def test_tolerance_none_accepts_any_timestamp() -> None:
    assert verify_webhook(BODY, GOOD, SECRET, tolerance=None, now=NOW + 10**9)["id"] == "evt_01"


def test_custom_tolerance_applies_both_ways() -> None:
    verify_webhook(BODY, GOOD, SECRET, tolerance=10, now=NOW + 10)
    with pytest.raises(WebhookSignatureError, match="11 s old"):
        verify_webhook(BODY, GOOD, SECRET, tolerance=10, now=NOW + 11)
    with pytest.raises(WebhookSignatureError, match="in the future"):
        verify_webhook(BODY, GOOD, SECRET, tolerance=10, now=NOW - 11)


def test_uses_the_system_clock_when_now_is_omitted() -> None:
    with pytest.raises(WebhookSignatureError) as info:
        verify_webhook(BODY, GOOD, SECRET)  # signed in 2026-01-01: long past by the clock
    assert info.value.reason in {"timestamp_too_old", "timestamp_in_future"}


def test_correctly_signed_non_json_body_is_refused() -> None:
    for body in (b"not json", b"[1, 2]", b"\xff\xfe"):
        header = sign_webhook(body, SECRET, timestamp=NOW)
        with pytest.raises(WebhookSignatureError) as info:
            verify_webhook(body, header, SECRET, now=NOW)
        assert info.value.reason == "invalid_payload"


@pytest.mark.parametrize("secret", ["", [], [SECRET, ""]])
def test_empty_secret_is_a_validation_error(secret: str | list[str]) -> None:
    with pytest.raises(ValidationError, match="secret"):
        verify_webhook(BODY, GOOD, secret, now=NOW)
    with pytest.raises(ValidationError, match="secret"):
        sign_webhook(BODY, secret, timestamp=NOW)


def test_negative_tolerance_and_timestamp_are_validation_errors() -> None:
    with pytest.raises(ValidationError, match="tolerance"):
        verify_webhook(BODY, GOOD, SECRET, tolerance=-1, now=NOW)
    with pytest.raises(ValidationError, match="timestamp"):
        sign_webhook(BODY, SECRET, timestamp=-1)


def test_payload_of_the_wrong_type_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="payload"):
        verify_webhook(123, GOOD, SECRET, now=NOW)  # type: ignore[arg-type]  # misuse on purpose


@given(
    body=st.binary(max_size=512),
    secret=st.text(min_size=1, max_size=40),
    timestamp=st.integers(min_value=0, max_value=2**40),
)
def test_any_signed_body_verifies_until_one_byte_changes(
    body: bytes, secret: str, timestamp: int
) -> None:
    wrapped = json.dumps({"body": body.hex()}).encode()  # verify returns JSON objects only
    header = sign_webhook(wrapped, secret, timestamp=timestamp)
    assert verify_webhook(wrapped, header, secret, now=timestamp) == {"body": body.hex()}
    for index in range(0, len(wrapped), max(1, len(wrapped) // 8)):
        tampered = bytearray(wrapped)
        tampered[index] ^= 0x01
        with pytest.raises(WebhookSignatureError):
            verify_webhook(bytes(tampered), header, secret, now=timestamp)


def test_receivers_need_no_server_dependencies() -> None:
    """``pip install pesa`` (no server extra) is enough to verify webhooks."""
    code = (
        "import sys, pesa\n"
        "pesa.verify_webhook\n"
        "heavy = ('sqlalchemy', 'fastapi', 'starlette', 'uvicorn', 'alembic', 'psycopg')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(f"t={'9' * 5000},v1=00", id="5000-digit-timestamp"),
        pytest.param(f"t={'1' * 16},v1=00", id="16-digit-timestamp"),
        pytest.param("garbage", id="garbage"),
        pytest.param("t=,v1=00", id="empty-timestamp"),
        pytest.param("v1=00", id="no-timestamp"),
        pytest.param(f"t={NOW}", id="no-signature"),
        pytest.param(f"t={NOW},v1=\ud800", id="lone-surrogate-signature"),
        pytest.param(f"t={NOW},v1=é", id="non-ascii-signature"),
        pytest.param("t=١٢٣,v1=00", id="arabic-indic-digits"),
        pytest.param(f"t={NOW},v1={'0' * 5000}", id="5000-character-header"),
        pytest.param("t=1,t=2,v1=00", id="two-timestamps"),
        pytest.param(",,,", id="only-commas"),
    ],
)
def test_every_bad_header_is_a_webhook_signature_error(header: str) -> None:
    """Issue 8 finding 9: never a bare ValueError (or anything else) on a bad header."""
    with pytest.raises(WebhookSignatureError):
        verify_webhook(BODY, header, SECRET, now=NOW)


@pytest.mark.parametrize("tolerance", [float("nan"), float("inf"), -1, -0.5, "300", True], ids=repr)
def test_a_tolerance_that_is_not_a_finite_non_negative_number_is_refused(
    tolerance: object,
) -> None:
    """Issue 8 finding 9: tolerance=nan used to accept a signature from 1970."""
    ancient = sign_webhook(BODY, SECRET, timestamp=1)
    with pytest.raises(ValidationError) as info:
        verify_webhook(BODY, ancient, SECRET, tolerance=tolerance, now=NOW)  # type: ignore[arg-type]  # misuse on purpose
    assert info.value.field == "tolerance"
