"""A Gateway HTTPS listener's tls section → the certificate it serves, or why none.

Only `mode: Terminate` (the default) is served: Envoy ends TLS with the
certificate and routes the requests inside. The certificate comes from the
first certificateRef that resolves to a servable kubernetes.io/tls Secret,
loaded by the same cache and checks as an Ingress's spec.tls, so both APIs
refuse exactly the same Secrets. A Secret in another namespace needs a
ReferenceGrant there that names Gateways of this namespace.

Every ref that does not resolve becomes a listener condition ResolvedRefs
False: RefNotPermitted for a missing grant, InvalidCertificateRef otherwise,
as the Gateway API names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from xds_ingress import ir
from xds_ingress.sources.objects import SECRET, KubeObject
from xds_ingress.store import StoreView
from xds_ingress.translate import fields
from xds_ingress.translate.certificates import CertificateCache
from xds_ingress.translate.https import load_certificate
from xds_ingress.translate.refgrants import secret_granted
from xds_ingress.translate.validation import Invalid

INVALID_CERTIFICATE_REF = "InvalidCertificateRef"
REF_NOT_PERMITTED = "RefNotPermitted"
TERMINATE = "Terminate"


@dataclass(frozen=True, slots=True, kw_only=True)
class ListenerCertificate:
    """The certificate a listener serves (None: none servable) and what went wrong."""

    certificate: ir.TlsCertificate | None
    secret: str  # the Secret's name, "" without a certificate
    secret_namespace: str
    where: str  # the certificateRef it came from, for messages
    problems: tuple[Invalid, ...]  # reasons are ResolvedRefs reasons


def listener_certificate(
    view: StoreView,
    gateway: KubeObject,
    tls: object,
    *,
    where: str,
    now: datetime,
    cache: CertificateCache,
) -> ListenerCertificate | Invalid:
    """`tls` is the listener's tls field; Invalid when the listener cannot be TLS at all."""
    tls = fields.mapping(tls)
    mode = tls.get("mode", TERMINATE)
    if mode != TERMINATE:
        return Invalid(
            reason="UnsupportedValue",
            message=f"{where}.tls.mode {mode!r} is not supported: HTTPS listeners terminate TLS",
        )
    refs = fields.items(tls.get("certificateRefs"))
    problems: list[Invalid] = []
    if not refs:
        problems.append(
            Invalid(
                reason=INVALID_CERTIFICATE_REF,
                message=f"{where}.tls.certificateRefs is empty: there is no certificate to serve",
            )
        )
    chosen: tuple[ir.TlsCertificate, str, str, str] | None = None
    for index, raw in enumerate(refs):
        here = f"{where}.tls.certificateRefs[{index}]"
        found = _certificate(view, gateway, raw, where=here, now=now, cache=cache)
        if isinstance(found, Invalid):
            problems.append(found)
        elif chosen is None:
            chosen = found
        else:
            # One filter chain per certificate, chosen by SNI: a second
            # certificate for the same names could never be picked.
            problems.append(
                Invalid(
                    reason=INVALID_CERTIFICATE_REF,
                    message=f"{here}: only one certificate per listener is served; "
                    f"{chosen[3]} is used",
                )
            )
    if chosen is None:
        return ListenerCertificate(
            certificate=None, secret="", secret_namespace="", where=where, problems=tuple(problems)
        )
    certificate, namespace, name, here = chosen
    return ListenerCertificate(
        certificate=certificate,
        secret=name,
        secret_namespace=namespace,
        where=here,
        problems=tuple(problems),
    )


def _certificate(
    view: StoreView,
    gateway: KubeObject,
    raw: object,
    *,
    where: str,
    now: datetime,
    cache: CertificateCache,
) -> tuple[ir.TlsCertificate, str, str, str] | Invalid:
    ref = fields.mapping(raw)
    group = fields.text(ref.get("group")) or ""
    kind = fields.text(ref.get("kind")) or SECRET
    if group or kind != SECRET:
        return Invalid(
            reason=INVALID_CERTIFICATE_REF,
            message=f"{where}: only Secrets can hold certificates, not {kind} ({group or 'core'})",
        )
    name = fields.text(ref.get("name"))
    if not name:
        return Invalid(reason=INVALID_CERTIFICATE_REF, message=f"{where} has no name")
    namespace = fields.text(ref.get("namespace")) or gateway.namespace
    if not secret_granted(view, source=gateway, namespace=namespace, secret=name):
        return Invalid(
            reason=REF_NOT_PERMITTED,
            message=f"{where}: Secret {namespace}/{name} is in another namespace, and no "
            "ReferenceGrant there allows this Gateway to use it",
        )
    loaded = load_certificate(view, namespace=namespace, name=name, now=now, cache=cache)
    if isinstance(loaded, Invalid):
        return Invalid(
            reason=INVALID_CERTIFICATE_REF,
            message=f"{where}: Secret {namespace}/{name}: {loaded.message}",
        )
    return loaded.certificate, namespace, name, where
