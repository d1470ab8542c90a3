"""Secrets with a `ca.crt` → CaBundles Envoy will accept, or why not.

Used both ways: the CA that client certificates must chain to (mTLS on the
HTTPS listener) and the CA that a GRPCS backend's certificate must chain to.
Any Secret type will do (Opaque, or the kubernetes.io/tls Secret that
cert-manager fills with tls.crt, tls.key and ca.crt). Envoy refuses an SDS
validation context it cannot parse, and a listener or cluster waiting for it
never warms, so what Envoy would refuse is refused here, as a condition.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from xds_ingress import ir
from xds_ingress.sources.objects import SECRET
from xds_ingress.store import StoreView
from xds_ingress.translate import fields
from xds_ingress.translate.validation import Invalid

CA_KEY = "ca.crt"


def ca_bundle_name(*, namespace: str, secret: str) -> str:
    return f"{namespace}/{secret}/{CA_KEY}"


def load_ca_bundle(view: StoreView, *, namespace: str, secret: str) -> ir.CaBundle | Invalid:
    """The CA certificates in Secret namespace/secret's ca.crt, normalised."""
    found = view.get(SECRET, namespace, secret)
    if found is None:
        return Invalid(reason="SecretNotFound", message=f"Secret {namespace}/{secret} not found")
    data = _value(found.body, secret=f"{namespace}/{secret}")
    if isinstance(data, Invalid):
        return data
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        certificates = []
    if not certificates:
        # The parser's text is not passed on: it may quote the Secret's data.
        return Invalid(
            reason="InvalidCASecret",
            message=f"Secret {namespace}/{secret}: {CA_KEY} is not PEM certificates",
        )
    return ir.CaBundle(
        name=ca_bundle_name(namespace=namespace, secret=secret),
        ca_pem="".join(
            cert.public_bytes(serialization.Encoding.PEM).decode("ascii") for cert in certificates
        ),
    )


def _value(body: Mapping[str, object], *, secret: str) -> bytes | Invalid:
    # stringData wins over data, as the API server merges them on write.
    text = fields.text(fields.mapping(body.get("stringData")).get(CA_KEY))
    if text is not None:
        return text.encode()
    encoded = fields.text(fields.mapping(body.get("data")).get(CA_KEY))
    if encoded is None:
        return Invalid(reason="InvalidCASecret", message=f"Secret {secret} has no {CA_KEY}")
    try:
        return base64.b64decode("".join(encoded.split()), validate=True)
    except (binascii.Error, ValueError):
        return Invalid(
            reason="InvalidCASecret", message=f"Secret {secret}: data.{CA_KEY} is not base64"
        )
