"""Which TLS hosts check client certificates (mTLS), and against which CA.

An Ingress asks with `xds-ingress.io/client-ca-secret` (a Secret with
ca.crt in its namespace) and optionally `xds-ingress.io/client-cert:
required|optional`; it applies to the hosts the Ingress's spec.tls serves.

Filter chains are per certificate, and client validation happens at the
handshake, before any :authority is known; so hosts of one certificate that
differ in client validation get a filter chain each (https.py), with a route
config of their own: a client that coalesces onto one connection a host
with other checks is answered 421 and opens a connection of its own for it.

This fails closed. A host whose CA Secret is missing or unusable, or that
two Ingresses ask to check differently, gets no validation context, and
every route of an Ingress requiring client certificates only forwards
requests whose connection presented a validated one (route.py answers the
rest 403). So such a host, and plain HTTP, answer 403 instead of serving
without the checks that were asked for.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

from xds_ingress import ir
from xds_ingress.sources.objects import INGRESS, ObjectKey
from xds_ingress.store import StoreView
from xds_ingress.translate.annotations import (
    CLIENT_CA_SECRET,
    ClientCertificates,
    client_certificates,
)
from xds_ingress.translate.ca_bundles import load_ca_bundle
from xds_ingress.translate.findings import Findings
from xds_ingress.translate.hostnames import covers, is_wildcard
from xds_ingress.translate.tls_rules import TlsRequest
from xds_ingress.translate.validation import Invalid

CLIENT_CERTIFICATE_CONFLICT = "ClientCertificateConflict"


def client_validations(
    requests: Sequence[TlsRequest],
    *,
    assignment: Mapping[str, str],
    view: StoreView,
    findings: Findings,
) -> dict[str, ir.ClientValidation]:
    """Host → the client validation its filter chain does; hosts without are left out.

    `assignment` is host → the certificate that serves it (see https.py).
    """
    wanted: dict[str, dict[ObjectKey, tuple[TlsRequest, ClientCertificates]]] = defaultdict(dict)
    for request in requests:
        if request.origin.kind != INGRESS:
            continue
        asked = client_certificates(request.origin, findings=findings)
        if asked is None:
            continue
        for host in _hosts(request, assignment=assignment):
            wanted[host].setdefault(request.origin.key, (request, asked))
    loaded: dict[tuple[str, str], ir.CaBundle | Invalid] = {}
    chosen: dict[str, ir.ClientValidation] = {}
    for host in sorted(wanted):
        found: dict[ObjectKey, ir.ClientValidation | None] = {}
        for key, (request, asked) in sorted(wanted[host].items()):
            where = (request.origin.namespace, asked.ca_secret)
            if where not in loaded:
                loaded[where] = load_ca_bundle(view, namespace=where[0], secret=where[1])
            ca = loaded[where]
            if isinstance(ca, Invalid):
                findings.unresolved(
                    request.origin,
                    reason=ca.reason,
                    message=f"annotation {CLIENT_CA_SECRET}: {ca.message}; host {host} "
                    "checks no client certificate, and routes that require one answer 403",
                )
                found[key] = None
                continue
            found[key] = ir.ClientValidation(ca=ca, required=asked.required)
        distinct = set(found.values())
        if len(distinct) > 1:
            _conflict(host, [request for request, _ in wanted[host].values()], findings=findings)
            continue
        (only,) = distinct
        if only is not None:
            chosen[host] = only
    return chosen


def _hosts(request: TlsRequest, *, assignment: Mapping[str, str]) -> Iterable[str]:
    """The hosts the request asks to serve that were given its certificate."""
    names = request.rule_hosts if request.hosts is None else request.hosts
    wildcards = [name for name in names if is_wildcard(name)]
    for host, certificate in assignment.items():
        if certificate != request.secret_name:
            continue
        if host in names or any(covers(wildcard, host) for wildcard in wildcards):
            yield host


def _conflict(host: str, requests: Sequence[TlsRequest], *, findings: Findings) -> None:
    names = ", ".join(sorted(str(request.origin.key) for request in requests))
    for request in requests:
        findings.rejected(
            request.origin,
            reason=CLIENT_CERTIFICATE_CONFLICT,
            message=f"host {host}: {names} ask for different client certificate checks; "
            "it checks none, and routes that require a client certificate answer 403",
        )
