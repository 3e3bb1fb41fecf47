"""The emulator's own keys: the RSA pair for SecurityCredentials and the TLS certificates.

Keys are generated with ``cryptography`` once per process (or loaded from ``key_dir`` when
one is configured, so that a client can keep trusting the same files across restarts).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import ipaddress
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pesa._exceptions import ConfigurationError

__all__ = ["CredentialKeys", "TlsFiles", "credential_keys", "tls_files"]

_lock = threading.Lock()
_credential_cache: dict[Path | None, CredentialKeys] = {}
_tls_cache: dict[Path | None, TlsFiles] = {}
_RSA_BLOCK = 256  # bytes in a 2048-bit RSA ciphertext


@dataclass(frozen=True)
class CredentialKeys:
    """The RSA key pair whose certificate clients encrypt SecurityCredentials with."""

    private_key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @property
    def certificate_pem(self) -> bytes:
        """The certificate in PEM, as served at ``GET /__emulator__/certificate``."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def decrypt(self, credential: str) -> str | None:
        """Decrypt a SecurityCredential (base64, PKCS#1 v1.5); None when it is not ours."""
        blob = decode_block(credential)
        if blob is None:
            return None
        try:
            return self.private_key.decrypt(blob, padding.PKCS1v15()).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for ``--tls``: a CA to trust, and the server certificate and key it signed."""

    ca_path: Path
    cert_path: Path
    key_path: Path


def decode_block(credential: str) -> bytes | None:
    """The 256 bytes of a base64 2048-bit RSA block, or None when it is anything else."""
    try:
        blob = base64.b64decode(credential, validate=True)
    except (binascii.Error, ValueError):
        return None
    return blob if len(blob) == _RSA_BLOCK else None


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pesa emulator"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity() -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(days=1), now + dt.timedelta(days=3650)


def _pem_key(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _make_credential_keys() -> CredentialKeys:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    not_before, not_after = _validity()
    name = _name("apicrypt.emulator.pesa")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return CredentialKeys(key, cert)


def credential_keys(key_dir: Path | None = None) -> CredentialKeys:
    """The emulator's credential key pair: one per process, or persisted in ``key_dir``."""
    with _lock:
        cached = _credential_cache.get(key_dir)
        if cached is not None:
            return cached
        keys: CredentialKeys | None = None
        if key_dir is not None:
            key_file, cert_file = key_dir / "credential-key.pem", key_dir / "credential-cert.pem"
            if key_file.exists() and cert_file.exists():
                loaded = serialization.load_pem_private_key(key_file.read_bytes(), None)
                if not isinstance(loaded, rsa.RSAPrivateKey):
                    raise ConfigurationError(f"{key_file} is not an RSA private key")
                cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
                keys = CredentialKeys(loaded, cert)
            else:
                keys = _make_credential_keys()
                key_dir.mkdir(parents=True, exist_ok=True)
                key_file.write_bytes(_pem_key(keys.private_key))
                key_file.chmod(0o600)
                cert_file.write_bytes(keys.certificate_pem)
        else:
            keys = _make_credential_keys()
        _credential_cache[key_dir] = keys
        return keys


def _make_tls(directory: Path) -> TlsFiles:
    # A CA plus a leaf it signs: Python's ssl (VERIFY_X509_STRICT on 3.13) refuses a bare
    # self-signed leaf as its own trust anchor. EC keys keep startup fast.
    ca_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity()
    ca_name = _name("pesa emulator local CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    files.ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    files.key_path.write_bytes(_pem_key(leaf_key))
    files.key_path.chmod(0o600)
    return files


def tls_files(key_dir: Path | None = None) -> TlsFiles:
    """TLS files for ``--tls``: reused from ``key_dir`` when present, else generated once."""
    with _lock:
        cached = _tls_cache.get(key_dir)
        if cached is not None and cached.ca_path.exists():
            return cached
        if key_dir is not None:
            files = TlsFiles(key_dir / "ca.pem", key_dir / "server.pem", key_dir / "server-key.pem")
            if not all(p.exists() for p in (files.ca_path, files.cert_path, files.key_path)):
                files = _make_tls(key_dir)
        else:
            files = _make_tls(Path(tempfile.mkdtemp(prefix="pesa-emulator-tls-")))
        _tls_cache[key_dir] = files
        return files
