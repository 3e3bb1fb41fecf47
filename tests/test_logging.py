"""Secrets never reach a log line, and phone numbers are masked."""

import logging

import pytest

from pesa._logging import get_logger, mask_phone, redact


@pytest.mark.parametrize(
    ("phone", "masked"),
    [("254708374149", "2547****149"), ("0708374149", "0708****149"), (254110000001, "2541****001")],
)
def test_mask_phone(phone: str | int, masked: str) -> None:
    assert mask_phone(phone) == masked


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer c9SQxWWhmdVRlyh0zh8gZDTkubVF",
        '{"Password": "MTc0Mzc5YmZiMjc5ZjlhYTli", "Amount": 1}',
        "SecurityCredential=Zm9vYmFyYmF6cXV4",
        "passkey='bfb279f9aa9bdbcf158e97dd71a467cd'",
        '{"access_token": "c9SQxWWhmdVRlyh0zh8gZDTkubVF", "expires_in": "3599"}',
    ],
)
def test_redact_removes_secrets(text: str) -> None:
    out = redact(text)
    for secret in ("c9SQxWWhmdVRlyh0zh8gZDTkubVF", "MTc0Mzc5", "Zm9vYmFy", "bfb279f9"):
        assert secret not in out


def test_redact_masks_phone_numbers_in_any_format() -> None:
    out = redact("push to 254708374149, alt +254110000001 and 0712345678")
    assert "254708374149" not in out and "2547****149" in out
    assert "110000001" not in out
    assert "0712345678" not in out


def test_child_logger_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    log = get_logger("pesa.test")
    with caplog.at_level(logging.DEBUG, logger="pesa"):
        log.debug("sending %s with token %s", "254708374149", "Bearer abcdefghijkl")
    assert "254708374149" not in caplog.text
    assert "abcdefghijkl" not in caplog.text


def test_redact_masks_the_phone_number_inside_checkout_request_ids() -> None:
    # Daraja's CheckoutRequestID ends with the customer's last nine digits.
    out = redact("STK ws_CO_21072024125243250722943992 settled; old id ws_CO_191220191020363925")
    assert "722943992" not in out
    assert "ws_CO_210720241252432507*****992" in out
    assert "ws_CO_191220191020363925" in out  # older ids carry no phone number
