"""Validation tables: every phone format, boundary amounts and text lengths."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from pesa import ValidationError
from pesa.daraja import (
    Msisdn,
    check_storable_text,
    normalize_msisdn,
    validate_account_reference,
    validate_amount,
    validate_occasion,
    validate_remarks,
    validate_shortcode,
    validate_transaction_desc,
    validate_url,
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("0708374149", "254708374149"),
        ("0110123456", "254110123456"),
        ("708374149", "254708374149"),
        ("110123456", "254110123456"),
        ("+254708374149", "254708374149"),
        ("254708374149", "254708374149"),
        ("254110123456", "254110123456"),
        ("+254110123456", "254110123456"),
        ("0708 374 149", "254708374149"),
        ("0708-374-149", "254708374149"),
        ("+254 708 374 149", "254708374149"),
        (" 254708374149 ", "254708374149"),
        (254708374149, "254708374149"),
        (708374149, "254708374149"),
    ],
)
def test_normalize_msisdn_accepts_every_safaricom_format(given: str | int, expected: str) -> None:
    assert normalize_msisdn(given) == expected


@pytest.mark.parametrize(
    "given",
    [
        "",
        "0208374149",  # landline prefix
        "07083741490",  # 11 digits
        "070837414",  # too short
        "2547083741499",  # 13 digits
        "255708374149",  # Tanzania
        "+0708374149",
        "0708374149x",
        "254 0708374149",
        "phone",
        "08374149",
    ],
)
def test_normalize_msisdn_rejects_anything_else(given: str) -> None:
    with pytest.raises(ValidationError) as info:
        normalize_msisdn(given)
    assert info.value.field == "phone"
    assert "07XXXXXXXX" in info.value.rule


@pytest.mark.parametrize("given", [True, 7.08374149e8, None, b"0708374149"])
def test_normalize_msisdn_rejects_non_text_types(given: Any) -> None:
    with pytest.raises(ValidationError):
        normalize_msisdn(given)


def test_rejected_phone_is_masked_in_the_error() -> None:
    with pytest.raises(ValidationError) as info:
        normalize_msisdn("25570837414999")
    assert "25570837414999" not in str(info.value)
    assert "****" in str(info.value)


def test_msisdn_field_normalises_in_a_model() -> None:
    class M(BaseModel):
        phone: Msisdn

    assert M(phone="0110 123 456").phone == "254110123456"
    with pytest.raises(PydanticValidationError):
        M(phone="12345")


@pytest.mark.parametrize(
    ("value", "minimum", "maximum", "expected"),
    [
        (1, 1, 250_000, 1),
        (250_000, 1, 250_000, 250_000),
        (Decimal("100"), 1, 250_000, 100),
        (Decimal("100.00"), 1, 250_000, 100),
        (10, 10, 250_000, 10),
    ],
)
def test_validate_amount_accepts_whole_shillings(
    value: Any, minimum: int, maximum: int, expected: int
) -> None:
    result = validate_amount(value, minimum=minimum, maximum=maximum)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    ("value", "minimum", "maximum", "rule"),
    [
        (0, 1, 250_000, "between 1 and 250000"),
        (250_001, 1, 250_000, "between 1 and 250000"),
        (9, 10, 250_000, "between 10 and 250000"),
        (-5, 1, 250_000, "between"),
        (Decimal("10.50"), 1, 250_000, "without a fraction"),
        (Decimal("NaN"), 1, 250_000, "without a fraction"),
        (Decimal("Infinity"), 1, 250_000, "without a fraction"),
        (10.0, 1, 250_000, "not float"),
        ("10", 1, 250_000, "not float or str"),
        (True, 1, 250_000, "int or a Decimal"),
        (None, 1, 250_000, "int or a Decimal"),
    ],
)
def test_validate_amount_rejects(value: Any, minimum: int, maximum: int, rule: str) -> None:
    with pytest.raises(ValidationError) as info:
        validate_amount(value, field="amount", minimum=minimum, maximum=maximum)
    assert info.value.field == "amount"
    assert rule in info.value.rule


@pytest.mark.parametrize(
    ("check", "field", "ok", "too_long"),
    [
        (validate_account_reference, "account_reference", "A" * 12, "A" * 13),
        (validate_transaction_desc, "description", "D" * 13, "D" * 14),
        (validate_remarks, "remarks", "R" * 100, "R" * 101),
        (validate_occasion, "occasion", "O" * 100, "O" * 101),
    ],
)
def test_text_lengths_boundaries(check: Any, field: str, ok: str, too_long: str) -> None:
    assert check(ok) == ok
    with pytest.raises(ValidationError) as info:
        check(too_long)
    assert info.value.field == field
    assert str(len(too_long)) in info.value.rule


def test_remarks_need_two_characters() -> None:
    assert validate_remarks("OK") == "OK"
    with pytest.raises(ValidationError, match="2 to 100"):
        validate_remarks("K")


@pytest.mark.parametrize("check", [validate_account_reference, validate_transaction_desc])
def test_required_text_cannot_be_empty(check: Any) -> None:
    with pytest.raises(ValidationError, match="1 to"):
        check("")


def test_text_is_never_silently_stripped() -> None:
    with pytest.raises(ValidationError, match="whitespace"):
        validate_account_reference("INV42 ")


def test_occasion_may_be_empty() -> None:
    assert validate_occasion("") == ""


@pytest.mark.parametrize(
    ("value", "ok"),
    [("174379", True), (600984, True), ("1234", False), ("12345678", False), ("17437a", False)],
)
def test_shortcode(value: Any, ok: bool) -> None:
    if ok:
        assert validate_shortcode(value) == str(value)
    else:
        with pytest.raises(ValidationError, match="5 to 7 digits"):
            validate_shortcode(value)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://example.com/stk/cb", True),
        ("http://127.0.0.1:8000/cb", True),
        ("https://example.com/cb ", False),
        ("example.com/cb", False),
        ("ftp://example.com", False),
        ("", False),
    ],
)
def test_validate_url(url: str, ok: bool) -> None:
    if ok:
        assert validate_url(url) == url
    else:
        with pytest.raises(ValidationError):
            validate_url(url)


@pytest.mark.parametrize(
    "given",
    [
        "٠٧١٢٣٤٥٦٧٨",  # Arabic-Indic digits
        "07١٢٣٤٥٦٧٨",  # ASCII prefix, Arabic-Indic rest
        "۰۷۱۲۳۴۵۶۷۸",  # Extended Arabic-Indic (Persian) digits
        "０７１２３４５６７８",  # fullwidth digits
        "2547१२३४५६७८",  # Devanagari digits
        "0712\u00a0345\u00a0678",  # no-break spaces are not the separators we allow
    ],
)
def test_phones_must_be_ascii_digits(given: str) -> None:
    """Issue 8 finding 6: ``\\d`` took any Unicode digit; only 0-9 are a phone."""
    with pytest.raises(ValidationError) as info:
        normalize_msisdn(given)
    assert info.value.field == "phone"
    assert "ASCII digits" in info.value.rule

    class Model(BaseModel):
        phone: Msisdn

    with pytest.raises(PydanticValidationError):
        Model(phone=given)


@pytest.mark.parametrize(
    "value", ["INV\x0042", "INV\n42", "INV\ud80042", "INV\x1b42", "INV\t42"], ids=repr
)
def test_text_fields_refuse_control_characters_and_lone_surrogates(value: str) -> None:
    """Issue 8 finding 7: NUL in account_reference reached PostgreSQL (a 503)."""
    for check, field in (
        (validate_account_reference, "account_reference"),
        (validate_transaction_desc, "description"),
    ):
        with pytest.raises(ValidationError) as info:
            check(value)
        assert info.value.field == field
        assert "printable" in info.value.rule


@pytest.mark.parametrize("value", ["a\x00b", "\ud800"], ids=repr)
def test_storable_text_refuses_nul_and_lone_surrogates(value: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_storable_text(value, field="metadata.note")
    assert info.value.field == "metadata.note"
    assert check_storable_text("línea\nnueva", field="x") == "línea\nnueva"
