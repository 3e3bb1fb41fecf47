"""The initiator ``SecurityCredential``: RSA PKCS#1 v1.5 with the environment's certificate.

The public Safaricom certificates ship with the package (REFERENCE §5); the emulator, or a
rotated production certificate, is used through an explicit certificate path.
"""

from __future__ import annotations

import base64
from importlib import resources
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from pesa._exceptions import ConfigurationError, ValidationError

__all__ = [
    "BUNDLED_CERTIFICATES",
    "SANDBOX_INITIATOR",
    "SANDBOX_INITIATOR_PASSWORD",
    "SANDBOX_PASSKEY",
    "SANDBOX_STK_SHORTCODE",
    "bundled_certificate",
    "load_certificate",
    "security_credential",
]

# REFERENCE §5: the apicrypt sandbox certificate is the one reported to work; the DigiCert
# 2018 one ships too, as "sandbox-digicert", for when 2001 persists with the default.
# Safaricom's public sandbox test credentials for M-Pesa Express (published on the Daraja
# portal): not secrets. The emulator accepts them too.
SANDBOX_STK_SHORTCODE: Final = "174379"
SANDBOX_PASSKEY: Final = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
# The sandbox initiator for B2C, reversal, Transaction Status and balance (REFERENCE §2).
SANDBOX_INITIATOR: Final = "testapi"
SANDBOX_INITIATOR_PASSWORD: Final = "Safaricom999!*!"

BUNDLED_CERTIFICATES: Final[dict[str, str]] = {
    "sandbox": "sandbox-cert.cer",
    "sandbox-digicert": "sandbox-cert-digicert-2018.cer",
    "production": "production-cert.cer",
}

CertificateSource = x509.Certificate | bytes | str | Path


def bundled_certificate(name: str) -> x509.Certificate:
    """One of the certificates bundled with pesa: ``sandbox``, ``sandbox-digicert``, ``production``.

    Raises:
        ConfigurationError: for any other name (the emulator's certificate is not bundled:
            pass its path as ``certificate_path``).
    """
    filename = BUNDLED_CERTIFICATES.get(name)
    if filename is None:
        raise ConfigurationError(
            f"no bundled certificate for {name!r}: set PESA_CERTIFICATE_PATH "
            f"(bundled: {', '.join(sorted(BUNDLED_CERTIFICATES))})"
        )
    data = resources.files("pesa.daraja").joinpath("certs", filename).read_bytes()
    return load_certificate(data)


def load_certificate(source: CertificateSource) -> x509.Certificate:
    """Load an X.509 certificate from PEM or DER bytes, PEM text, or a file path.

    Raises:
        ConfigurationError: the file is missing or is not a certificate.
    """
    if isinstance(source, x509.Certificate):
        return source
    if isinstance(source, Path) or (isinstance(source, str) and "-----BEGIN" not in source):
        path = Path(source)
        try:
            data = path.read_bytes()
        except OSError as err:
            raise ConfigurationError(
                f"cannot read certificate {path} (PESA_CERTIFICATE_PATH): {err.strerror}"
            ) from err
    else:
        data = source.encode("ascii") if isinstance(source, str) else source
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as err:
        raise ConfigurationError(
            "certificate is neither PEM nor DER X.509 (PESA_CERTIFICATE_PATH)"
        ) from err


def security_credential(password: str, certificate: CertificateSource) -> str:
    """Encrypt the initiator password into Daraja's ``SecurityCredential``.

    RSA with PKCS#1 v1.5 padding (not OAEP), base64-encoded. The output differs on every
    call (random padding) and any of them is valid; nothing is appended to the password.

    Example:
        >>> cred = security_credential("Safaricom999!*!", bundled_certificate("sandbox"))
        >>> len(cred)
        344
    """
    if not isinstance(password, str) or not password:
        raise ValidationError("initiator_password", "must be a non-empty string")
    key = load_certificate(certificate).public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ConfigurationError("certificate does not hold an RSA public key")
    blob = key.encrypt(password.encode("utf-8"), padding.PKCS1v15())
    return base64.b64encode(blob).decode("ascii")
