"""Test certificates, made fresh by each test run: a CA and the server certificates it signs.

- `CertificateAuthority("test CA")`: a self-signed CA; `.pem` is what a
  client trusts, `.issue(*names)` a server certificate for those DNS names.
- `tls_secret(name, issued)`: a kubernetes.io/tls Secret holding one, with
  base64 `data` as the API server stores it (or `stringData`).

ECDSA P-256 keys by default: an RSA key takes tens of milliseconds to make.
"""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyType = Literal["ec", "p384", "rsa", "rsa-1024", "ed25519", "p224"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def new_key(key_type: KeyType = "ec") -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if key_type == "p224":
        return ec.generate_private_key(ec.SECP224R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "rsa-1024":
        return rsa.generate_private_key(public_exponent=65537, key_size=1024)
    return ed25519.Ed25519PrivateKey.generate()


def key_pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class Issued:
    """A server certificate and its key, in PEM."""

    cert_pem: str
    key_pem: str
    names: tuple[str, ...]

    @property
    def der(self) -> bytes:
        return x509.load_pem_x509_certificate(self.cert_pem.encode()).public_bytes(
            serialization.Encoding.DER
        )


class CertificateAuthority:
    def __init__(self, common_name: str = "xds-ingress test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - datetime.timedelta(days=1))
            .not_valid_after(_now() + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        *names: str,
        key_type: KeyType = "ec",
        valid_days: tuple[int, int] = (-1, 30),
    ) -> Issued:
        """A server certificate for DNS `names`; `valid_days` are (from, to) relative to now."""
        key = new_key(key_type)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0] if names else "no-names"))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() + datetime.timedelta(days=valid_days[0]))
            .not_valid_after(_now() + datetime.timedelta(days=valid_days[1]))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        )
        if names:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(name) for name in names]),
                critical=False,
            )
        certificate = builder.sign(self.key, hashes.SHA256())
        return Issued(
            cert_pem=certificate.public_bytes(serialization.Encoding.PEM).decode(),
            key_pem=key_pem(key),
            names=names,
        )


def tls_secret(
    name: str,
    issued: Issued | None = None,
    *,
    namespace: str = "default",
    cert_pem: str | None = None,
    key_pem: str | None = None,
    string_data: bool = False,
    secret_type: str = "kubernetes.io/tls",
) -> dict[str, Any]:
    """A Secret as a user writes it; `cert_pem`/`key_pem` override `issued`'s."""
    cert = cert_pem if cert_pem is not None else (issued.cert_pem if issued else "")
    key = key_pem if key_pem is not None else (issued.key_pem if issued else "")
    values = {"tls.crt": cert, "tls.key": key}
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": secret_type,
    }
    if string_data:
        body["stringData"] = values
    else:
        body["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
    return body
