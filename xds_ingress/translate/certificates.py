"""kubernetes.io/tls Secrets → TlsCertificates Envoy will accept, or why not.

Envoy refuses an SDS secret it cannot load, and a listener that waits for
that secret never warms; so everything Envoy would refuse is refused here
first, as a condition. What Envoy would serve but clients may not like (an
expired certificate) is served, with a warning.

Messages never quote the Secret's data, and no exception text from the
parser is passed on: the key must not reach a log line or a status.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from xds_ingress import ir
from xds_ingress.sources.objects import KubeObject
from xds_ingress.translate import fields
from xds_ingress.translate.validation import Invalid, check_host

TLS_SECRET_TYPE = "kubernetes.io/tls"
CERTIFICATE_KEY = "tls.crt"
PRIVATE_KEY_KEY = "tls.key"

# What Envoy (BoringSSL) loads as a server certificate: RSA from 2048 bits
# (BoringSSL's largest modulus is 16384), ECDSA on the NIST curves, Ed25519.
_RSA_BITS = range(2048, 16384 + 1)
_EC_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


@dataclass(frozen=True, slots=True, kw_only=True)
class CertificateWarning:
    """Served anyway, but the user should know: a reason and a message."""

    reason: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Loaded:
    certificate: ir.TlsCertificate
    warnings: tuple[CertificateWarning, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Parsed:
    """What a Secret holds, checked; everything about it that does not change with time."""

    certificate: ir.TlsCertificate
    not_before: datetime
    not_after: datetime


class CertificateCache:
    """Parsed Secrets, kept from one translation to the next.

    Checking an RSA key costs tens of milliseconds, and translate runs on
    every change of any Ingress. A Secret is parsed again only when its
    content changes (KubeObject equality is content equality). Bounded
    without a size to tune: `rotate()` at the end of a translation keeps
    exactly what that translation used. Not thread-safe: one pipeline owns it.
    """

    def __init__(self) -> None:
        self._previous: dict[KubeObject, Parsed | Invalid] = {}
        self._current: dict[KubeObject, Parsed | Invalid] = {}

    def load(self, secret: KubeObject, *, now: datetime) -> Loaded | Invalid:
        parsed = self._current.get(secret)
        if parsed is None:
            parsed = self._previous.get(secret)
            if parsed is None:
                parsed = parse_certificate(secret)
            self._current[secret] = parsed
        return parsed if isinstance(parsed, Invalid) else with_warnings(parsed, now=now)

    def rotate(self) -> None:
        self._previous = self._current
        self._current = {}


def parse_certificate(secret: KubeObject) -> Parsed | Invalid:
    """The Secret's certificate chain and key, checked and normalised."""
    secret_type = secret.body.get("type")
    if secret_type != TLS_SECRET_TYPE:
        return Invalid(
            reason="InvalidSecret",
            message=f"its type is {secret_type or 'Opaque'}, not {TLS_SECRET_TYPE}",
        )
    chain_bytes = _value(secret, CERTIFICATE_KEY)
    if isinstance(chain_bytes, Invalid):
        return chain_bytes
    key_bytes = _value(secret, PRIVATE_KEY_KEY)
    if isinstance(key_bytes, Invalid):
        return key_bytes
    try:
        chain = x509.load_pem_x509_certificates(chain_bytes)
    except ValueError:
        return Invalid(
            reason="InvalidCertificate", message=f"{CERTIFICATE_KEY} is not PEM certificates"
        )
    key = _private_key(key_bytes)
    if isinstance(key, Invalid):
        return key
    leaf = chain[0]
    if _public_der(leaf.public_key()) != _public_der(key.public_key()):
        return Invalid(
            reason="KeyMismatch",
            message=f"{PRIVATE_KEY_KEY} is not the key of the first certificate "
            f"in {CERTIFICATE_KEY}",
        )
    certificate = ir.TlsCertificate(
        name=f"{secret.namespace}/{secret.name}",
        cert_chain_pem="".join(
            cert.public_bytes(serialization.Encoding.PEM).decode("ascii") for cert in chain
        ),
        private_key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii"),
        sans=_dns_names(leaf),
    )
    return Parsed(
        certificate=certificate,
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
    )


def with_warnings(parsed: Parsed, *, now: datetime) -> Loaded:
    found = []
    if parsed.not_after < now:
        found.append(
            CertificateWarning(
                reason="CertificateExpired",
                message=f"its certificate expired at {parsed.not_after.isoformat()}",
            )
        )
    if parsed.not_before > now:
        found.append(
            CertificateWarning(
                reason="CertificateNotYetValid",
                message=f"its certificate is valid from {parsed.not_before.isoformat()}",
            )
        )
    if not parsed.certificate.sans:
        found.append(
            CertificateWarning(
                reason="NoDNSNames", message="its certificate names no DNS host in subjectAltName"
            )
        )
    return Loaded(certificate=parsed.certificate, warnings=tuple(found))


def _value(secret: KubeObject, key: str) -> bytes | Invalid:
    # stringData wins over data, as the API server merges them on write.
    text = fields.text(fields.mapping(secret.body.get("stringData")).get(key))
    if text is not None:
        return text.encode()
    encoded = fields.text(fields.mapping(secret.body.get("data")).get(key))
    if encoded is None:
        return Invalid(reason="InvalidSecret", message=f"it has no {key}")
    try:
        # Folded YAML may break a long value over lines.
        return base64.b64decode("".join(encoded.split()), validate=True)
    except (binascii.Error, ValueError):
        return Invalid(reason="InvalidSecret", message=f"its data.{key} is not base64")


ServingKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def _private_key(data: bytes) -> ServingKey | Invalid:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        return Invalid(reason="InvalidKey", message=f"{PRIVATE_KEY_KEY} is encrypted")
    except (ValueError, UnsupportedAlgorithm):
        return Invalid(reason="InvalidKey", message=f"{PRIVATE_KEY_KEY} is not a PEM private key")
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size not in _RSA_BITS:
            return Invalid(
                reason="InvalidKey",
                message=f"{PRIVATE_KEY_KEY} is a {key.key_size}-bit RSA key; "
                "Envoy needs 2048 to 16384 bits",
            )
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, _EC_CURVES):
            return Invalid(
                reason="InvalidKey",
                message=f"{PRIVATE_KEY_KEY} is an ECDSA key on {key.curve.name}; "
                "Envoy needs P-256, P-384 or P-521",
            )
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    return Invalid(
        reason="InvalidKey",
        message=f"{PRIVATE_KEY_KEY} is not an RSA, ECDSA or Ed25519 key",
    )


def _public_der(key: object) -> bytes | None:
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        return None
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _dns_names(leaf: x509.Certificate) -> tuple[str, ...]:
    # Only subjectAltName counts: clients stopped reading the subject's CN.
    try:
        extension = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    names = set()
    for name in extension.value.get_values_for_type(x509.DNSName):
        name = name.lower().rstrip(".")
        if check_host(name) is None:
            names.add(name)
    return tuple(sorted(names))
