"""Ingress spec.tls and HTTPS Gateway listeners → the HTTPS listener: one filter chain
per certificate.

Every host that is served over TLS is given to exactly one certificate:
1. the certificate an Ingress names for it in spec.tls (hosts, or with no
   hosts the Ingress's own rule hosts its certificate covers), or an HTTPS
   Gateway listener for its hostname and the hosts of its routes; when
   several name different certificates for one host, the older object keeps
   it, as for a contested path;
2. for a host under a wildcard that spec.tls names ("*.example.com"), that
   wildcard's certificate;
3. otherwise any certificate in use that covers the host: an exact name
   before a wildcard, then by Secret name. This is what lets an HTTP/2 client
   that coalesces two hosts of one certificate onto one connection (RFC 7540
   section 9.1.1) find both routed there.

A certificate's filter chain matches the SNI of its hosts and of the wildcard
names it holds that cover them, and its route config has the virtual hosts
of exactly those hosts. Any other :authority on that connection belongs to
another certificate or none, and is answered 421 Misdirected Request, which
tells the client to open a new connection for it (RFC 9110 section 15.5.20).

Hosts of one certificate that differ in client certificate checks (mTLS,
see client_validation.py) get a filter chain and a route config each, since
the handshake checks client certificates before any :authority is seen.

A Secret that cannot be served costs only its own hosts their TLS, with a
condition on each Ingress that names it; they stay on the plain HTTP listener.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from xds_ingress import ir
from xds_ingress.sources.objects import SECRET
from xds_ingress.store import StoreView
from xds_ingress.translate.age import age
from xds_ingress.translate.certificates import CertificateCache, Loaded
from xds_ingress.translate.client_validation import client_validations
from xds_ingress.translate.findings import Findings
from xds_ingress.translate.hostnames import covered_by_any, covers, is_wildcard, wildcard_for
from xds_ingress.translate.precedence import host_order
from xds_ingress.translate.rules import CATCH_ALL_HOST
from xds_ingress.translate.settings import ListenerSettings
from xds_ingress.translate.tls_rules import TlsRequest
from xds_ingress.translate.validation import Invalid

log = logging.getLogger(__name__)

HTTPS = "https"
CERTIFICATE_VALID = "CertificateValid"
MISDIRECTED = 421
# Names no Ingress host can take ("_" is not allowed in a host), so these
# virtual hosts never collide with a user's.
MISDIRECTED_VHOST = "misdirected_request"
CERTIFICATE_NAMES_VHOST = "certificate_names"
_MISDIRECTED_BODY = "xds-ingress: this connection's certificate does not serve this host\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpsConfig:
    listener: ir.HttpsListener | None  # None without a servable certificate
    route_configs: tuple[ir.RouteConfig, ...]
    certificates: tuple[ir.TlsCertificate, ...]


def route_config_name(certificate: str) -> str:
    return f"{HTTPS}/{certificate}"


class _ChainKey(NamedTuple):
    """One filter chain: a certificate, and the client validation of its hosts."""

    certificate: str
    validation: ir.ClientValidation | None

    def order(self) -> tuple[str, str, bool]:
        # Without validation first: it takes the certificate's spare wildcard names.
        if self.validation is None:
            return (self.certificate, "", False)
        return (self.certificate, self.validation.ca.name, self.validation.required)

    @property
    def route_config(self) -> str:
        name = route_config_name(self.certificate)
        if self.validation is None:
            return name
        mode = "required" if self.validation.required else "optional"
        return f"{name}+client-ca={self.validation.ca.name}+{mode}"


def https_config(
    requests: Sequence[TlsRequest],
    *,
    view: StoreView,
    virtual_hosts: Sequence[ir.VirtualHost],
    settings: ListenerSettings,
    findings: Findings,
    now: datetime,
    cache: CertificateCache,
) -> HttpsConfig:
    certificates = _load(requests, view=view, findings=findings, now=now, cache=cache)
    routed = {vhost.name: vhost for vhost in virtual_hosts}
    assignment = _assign(
        requests,
        certificates=certificates,
        # Without a certificate no host can be served over TLS.
        hosts=sorted(host for host in routed if host != CATCH_ALL_HOST) if certificates else (),
        findings=findings,
    )
    validations = client_validations(requests, assignment=assignment, view=view, findings=findings)
    # A chain per certificate, and per client validation within it: the
    # handshake checks client certificates before any :authority is seen.
    by_certificate: dict[str, list[str]] = defaultdict(list)
    by_chain: dict[_ChainKey, list[str]] = defaultdict(list)
    for name, serving in assignment.items():
        by_certificate[serving].append(name)
        by_chain[_ChainKey(serving, validations.get(name))].append(name)
    claimed = set(assignment)
    chains = []
    route_configs = []
    catch_all = routed.get(CATCH_ALL_HOST)
    for key in sorted(by_chain, key=_ChainKey.order):
        certificate_name, validation = key
        certificate = certificates[certificate_name]
        mine = by_chain[key]
        # The certificate's wildcards that cover a host it serves also take
        # the SNI of that wildcard's other names: such a client gets an HTTP
        # answer (404, or the catch-all routes) rather than a failed handshake.
        extra = [
            san
            for san in certificate.sans
            if is_wildcard(san) and san not in claimed and any(covers(san, n) for n in mine)
        ]
        claimed.update(extra)
        server_names = tuple(sorted({*mine, *extra}, key=host_order))
        chains.append(
            ir.TlsFilterChain(
                certificate=certificate_name,
                server_names=server_names,
                route_config=key.route_config,
                client_validation=validation,
            )
        )
        route_configs.append(
            _route_config(
                certificate,
                name=key.route_config,
                server_names=server_names,
                routed=routed,
                others=sorted(
                    (set(assignment) | set(routed)) - set(mine) - {CATCH_ALL_HOST},
                    key=host_order,
                ),
                catch_all=catch_all,
            )
        )
    if not chains:
        # Envoy refuses a listener without filter chains.
        return HttpsConfig(listener=None, route_configs=(), certificates=())
    return HttpsConfig(
        listener=ir.HttpsListener(
            name=HTTPS,
            address=settings.listen_address,
            port=settings.https_port,
            filter_chains=tuple(chains),
            min_tls_version=settings.min_tls_version,
            limits=settings.downstream,
        ),
        route_configs=tuple(route_configs),
        certificates=tuple(certificates[name] for name in sorted(by_certificate)),
    )


def _load(
    requests: Iterable[TlsRequest],
    *,
    view: StoreView,
    findings: Findings,
    now: datetime,
    cache: CertificateCache,
) -> dict[str, ir.TlsCertificate]:
    """The servable certificates by name; every Ingress naming a bad one is told."""
    results: dict[str, Loaded | Invalid] = {}
    loaded: dict[str, ir.TlsCertificate] = {}
    for request in requests:
        name = request.secret_name
        result = results.get(name)
        if result is None:
            result = results[name] = _load_one(view, request, now=now, cache=cache)
        where = f"{request.where}: Secret {name}"
        if isinstance(result, Invalid):
            message = f"{where}: {result.message}; its hosts are not served over TLS with it"
            findings.unresolved(request.origin, reason=result.reason, message=message)
            continue
        for warning in result.warnings:
            findings.problem(
                request.origin,
                type=CERTIFICATE_VALID,
                reason=warning.reason,
                message=f"{where}: {warning.message}; served anyway",
            )
        loaded[name] = result.certificate
    return loaded


def _load_one(
    view: StoreView, request: TlsRequest, *, now: datetime, cache: CertificateCache
) -> Loaded | Invalid:
    return load_certificate(
        view, namespace=request.namespace, name=request.secret, now=now, cache=cache
    )


def load_certificate(
    view: StoreView, *, namespace: str, name: str, now: datetime, cache: CertificateCache
) -> Loaded | Invalid:
    """The certificate in Secret `namespace`/`name`, or why it cannot be served."""
    secret = view.get(SECRET, namespace, name)
    if secret is None:
        return Invalid(reason="SecretNotFound", message="not found")
    try:
        return cache.load(secret, now=now)
    except Exception:
        # A parser bug on one odd Secret must not cost the other
        # certificates. The log line names the Secret, never its data.
        log.exception("loading the certificate of Secret %s/%s failed", namespace, name)
        return Invalid(reason="InternalError", message="xds-ingress failed to load it")


def _assign(
    requests: Sequence[TlsRequest],
    *,
    certificates: Mapping[str, ir.TlsCertificate],
    hosts: Iterable[str],
    findings: Findings,
) -> dict[str, str]:
    """Host (or wildcard name) → the name of the certificate that serves it."""
    asked: dict[str, list[TlsRequest]] = defaultdict(list)
    for request in requests:
        certificate = certificates.get(request.secret_name)
        if certificate is None:
            continue
        if request.hosts is None:
            names: Iterable[str] = (
                host for host in request.rule_hosts if covered_by_any(certificate.sans, host)
            )
        else:
            names = request.hosts
            for host in names:
                if not covered_by_any(certificate.sans, host):
                    findings.problem(
                        request.origin,
                        type=CERTIFICATE_VALID,
                        reason="HostNotCovered",
                        message=(
                            f"{request.where}: the certificate of Secret {request.secret_name} "
                            f"does not cover host {host}; served with it anyway"
                        ),
                    )
        for name in names:
            asked[name].append(request)
    assignment: dict[str, str] = {}
    for name, claimants in asked.items():
        ranked = sorted(claimants, key=lambda r: (age(r.origin), r.position))
        winner = ranked[0]
        assignment[name] = winner.secret_name
        for loser in ranked[1:]:
            if loser.secret_name != winner.secret_name:
                _lost(loser, winner, name=name, findings=findings)
    for host in hosts:
        if host in assignment:
            continue
        wildcard = wildcard_for(host)
        if wildcard is not None and wildcard in asked:
            assignment[host] = assignment[wildcard]
            continue
        covering = [c for c in certificates.values() if covered_by_any(c.sans, host)]
        if covering:
            assignment[host] = min(covering, key=lambda c: (host not in c.sans, c.name)).name
    return assignment


def _lost(loser: TlsRequest, winner: TlsRequest, *, name: str, findings: Findings) -> None:
    same_ingress = loser.origin.key == winner.origin.key
    by = f"{winner.where} of this Ingress" if same_ingress else str(winner.origin.key)
    findings.rejected(
        loser.origin,
        reason="CertificateConflict",
        message=(
            f"{loser.where}: host {name} is already served with Secret "
            f"{winner.secret_name} by {by}; Secret {loser.secret_name} is not used for it"
        ),
    )


def _route_config(
    certificate: ir.TlsCertificate,
    *,
    name: str,
    server_names: Sequence[str],
    routed: Mapping[str, ir.VirtualHost],
    others: Sequence[str],
    catch_all: ir.VirtualHost | None,
) -> ir.RouteConfig:
    # The very VirtualHost values of the HTTP route config: equal values, so
    # the resource builder builds each host once for both listeners.
    vhosts = [routed[name] for name in server_names if name in routed]
    unrouted = tuple(name for name in server_names if name not in routed)
    if unrouted:
        # Names the certificate serves without a rule of their own: the
        # catch-all rules (a rule without host, a defaultBackend) apply to
        # them as on plain HTTP; without those, Envoy answers 404.
        vhosts.append(
            ir.VirtualHost(
                name=CERTIFICATE_NAMES_VHOST,
                domains=unrouted,
                routes=catch_all.routes if catch_all is not None else (),
            )
        )
    # Envoy prefers an exact domain, then the longest wildcard, to "*": the
    # hosts of other certificates under this one's wildcards must be named
    # here, or a wildcard above would answer for them.
    wildcards = [name for name in server_names if is_wildcard(name)]
    elsewhere = tuple(host for host in others if covered_by_any(wildcards, host))
    namespace, _, secret = certificate.name.partition("/")
    vhosts.append(
        ir.VirtualHost(
            name=MISDIRECTED_VHOST,
            domains=(*elsewhere, CATCH_ALL_HOST),
            routes=(
                ir.Route(
                    name=MISDIRECTED_VHOST,
                    path=ir.PathMatch(type=ir.PathMatchType.STRING_PREFIX, value="/"),
                    action=ir.DirectResponse(status=MISDIRECTED, body=_MISDIRECTED_BODY),
                    origin=ir.ObjectRef(kind=SECRET, namespace=namespace, name=secret),
                ),
            ),
        )
    )
    return ir.RouteConfig(name=name, virtual_hosts=tuple(vhosts))
