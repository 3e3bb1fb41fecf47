"""Nairobi timestamps, the STK password check vector and the SecurityCredential."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from pesa import ConfigurationError, ValidationError
from pesa.daraja import (
    NAIROBI,
    SystemClock,
    bundled_certificate,
    daraja_timestamp,
    load_certificate,
    parse_daraja_timestamp,
    security_credential,
    stk_password,
)
from pesa.testing import FrozenClock

SANDBOX_PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
CHECK_VECTOR = (
    "MTc0Mzc5YmZiMjc5ZjlhYTliZGJjZjE1OGU5N2RkNzFhNDY3Y2QyZTBjODkzMDU5YjEwZjc4ZTZiNzJhZGExZWQy"
    "YzkxOTIwMTYwMjE2MTY1NjI3"
)


def test_stk_password_matches_the_reference_check_vector() -> None:
    assert stk_password("174379", SANDBOX_PASSKEY, "20160216165627") == CHECK_VECTOR
    assert stk_password(174379, SANDBOX_PASSKEY, "20160216165627") == CHECK_VECTOR


def test_stk_password_refuses_an_empty_passkey() -> None:
    with pytest.raises(ValidationError, match="passkey"):
        stk_password("174379", "", "20160216165627")


@pytest.mark.parametrize(
    "zone",
    [UTC, timezone(timedelta(hours=-8)), timezone(timedelta(hours=5, minutes=30)), NAIROBI],
)
def test_timestamp_is_nairobi_time_whatever_the_clock_zone(zone: timezone) -> None:
    instant = datetime(2016, 2, 16, 13, 56, 27, tzinfo=UTC).astimezone(zone)
    assert daraja_timestamp(FrozenClock(instant)) == "20160216165627"


def test_timestamp_rolls_over_midnight_in_nairobi() -> None:
    instant = datetime(2025, 12, 31, 21, 30, 0, tzinfo=UTC)
    assert daraja_timestamp(FrozenClock(instant)) == "20260101003000"


def test_system_clock_is_aware() -> None:
    assert SystemClock().now().tzinfo is not None
    assert len(daraja_timestamp()) == 14


def test_naive_clock_is_refused() -> None:
    class Naive:
        def now(self) -> datetime:
            return datetime(2020, 1, 1)

    with pytest.raises(ValidationError, match="aware"):
        daraja_timestamp(Naive())


@pytest.mark.parametrize("value", [20191219102115, "20191219102115"])
def test_parse_daraja_timestamp(value: str | int) -> None:
    parsed = parse_daraja_timestamp(value)
    assert parsed == datetime(2019, 12, 19, 7, 21, 15, tzinfo=UTC)
    assert parsed.utcoffset() == timedelta(hours=3)


@pytest.mark.parametrize("value", ["2019-12-19", "20191319102115", "2019121910211", True, ""])
def test_parse_daraja_timestamp_rejects_garbage(value: object) -> None:
    with pytest.raises(ValidationError):
        parse_daraja_timestamp(value)  # type: ignore[arg-type]


def _keypair(tmp_path: Path) -> tuple[rsa.RSAPrivateKey, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "emulator")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2040, 1, 1, tzinfo=UTC))
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "emulator.cer"
    path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    return key, path


def test_security_credential_decrypts_to_the_password_with_pkcs1v15(tmp_path: Path) -> None:
    key, path = _keypair(tmp_path)
    credential = security_credential("Safaricom999!*!", path)
    assert len(credential) == 344
    plain = key.decrypt(base64.b64decode(credential), padding.PKCS1v15())
    assert plain == b"Safaricom999!*!"
    # Random padding: every call differs, all valid.
    assert security_credential("Safaricom999!*!", path) != credential


@pytest.mark.parametrize("name", ["sandbox", "sandbox-digicert", "production"])
def test_bundled_certificates_load_and_encrypt(name: str) -> None:
    assert len(security_credential("pw", bundled_certificate(name))) == 344


def test_unknown_bundled_certificate_names_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="PESA_CERTIFICATE_PATH"):
        bundled_certificate("emulator")


def test_missing_certificate_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="PESA_CERTIFICATE_PATH"):
        load_certificate(tmp_path / "nope.cer")


def test_garbage_certificate_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.cer"
    path.write_bytes(b"not a certificate")
    with pytest.raises(ConfigurationError):
        load_certificate(path)


def test_empty_initiator_password_is_refused() -> None:
    with pytest.raises(ValidationError, match="initiator_password"):
        security_credential("", bundled_certificate("sandbox"))
