"""GRPCRoutes and HTTPRoutes attached to our Gateways → IR routes by virtual host.

Routes attached to an HTTP listener go to the plain listener's virtual
hosts, routes attached to an HTTPS listener to the TLS listener's, never
the other way round.

Envoy takes the first route that matches, so routes are sorted here by the
Gateway API's precedence. For a GRPCRoute: exact method matches, then
regular expressions, then matches on any method; among them the longer
service, then the longer method, then more header matches. For an
HTTPRoute: exact paths, then regular expressions, then path prefixes,
longer paths first; then a method match before none, then more header
matches. Ties go to the older route (creationTimestamp, then
namespace/name) and then to rule order. On a host both kinds serve, the
GRPCRoute's routes come first: the Gateway API orders no route across
kinds, and a method is more specific than the path prefix an HTTPRoute
usually has.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from xds_ingress import ir
from xds_ingress.sources.objects import GRPC_ROUTE, HTTP_ROUTE, KubeObject
from xds_ingress.store import StoreView
from xds_ingress.translate.age import age
from xds_ingress.translate.backends import BackendResolver
from xds_ingress.translate.findings import Findings
from xds_ingress.translate.gateways import Gateways
from xds_ingress.translate.grpcroute import GrpcBackendRef, grpc_rules, route_hostnames
from xds_ingress.translate.httproute import http_rules
from xds_ingress.translate.refgrants import reference_granted
from xds_ingress.translate.validation import Invalid

log = logging.getLogger(__name__)

UNAVAILABLE = 503
NOT_FOUND = 404
INTERNAL_ERROR = 500
# Reasons a backendRef fails to resolve, as the Gateway API names them.
BACKEND_NOT_FOUND = "BackendNotFound"
REF_NOT_PERMITTED = "RefNotPermitted"
INVALID_KIND = "InvalidKind"
# Which kind's routes match first on a shared host.
_KIND_RANK = {GRPC_ROUTE: 0, HTTP_ROUTE: 1}


Ranked = dict[str, list[tuple[tuple[object, ...], ir.Route]]]


@dataclass
class GatewayRoutes:
    """Routes by virtual host (each list in match order) and the Backends they use.

    `routes` are served on the plain HTTP listener, `tls_routes` on the HTTPS one.
    """

    routes: dict[str, list[ir.Route]] = field(default_factory=lambda: defaultdict(list))
    backends: dict[str, ir.Backend] = field(default_factory=dict)
    tls_routes: dict[str, list[ir.Route]] = field(default_factory=lambda: defaultdict(list))


@dataclass(frozen=True, slots=True, kw_only=True)
class _Match:
    path: ir.PathMatch
    headers: tuple[ir.HeaderMatch, ...]
    rank: tuple[object, ...]  # the kind's own precedence, most specific first


@dataclass(frozen=True, slots=True, kw_only=True)
class _Rule:
    matches: tuple[_Match, ...]
    backends: tuple[GrpcBackendRef, ...]
    request_headers: ir.HeaderMutation | None
    where: str
    position: int


def gateway_routes(
    view: StoreView, *, gateways: Gateways, resolver: BackendResolver, findings: Findings
) -> GatewayRoutes:
    ranked: Ranked = defaultdict(list)
    tls_ranked: Ranked = defaultdict(list)
    result = GatewayRoutes()
    for route in (*view.objects(GRPC_ROUTE), *view.objects(HTTP_ROUTE)):
        try:
            _one_route(
                route,
                view=view,
                gateways=gateways,
                resolver=resolver,
                ranked=(ranked, tls_ranked),
                result=result,
                findings=findings,
            )
        except Exception:
            # A translator bug on one odd object must not take down every
            # other route; the condition makes it visible.
            log.exception("translating %s failed", route.ref)
            message = "xds-ingress failed to translate it"
            findings.rejected(route, reason="InternalError", message=message)
    for by_host, into in ((ranked, result.routes), (tls_ranked, result.tls_routes)):
        for host, entries in by_host.items():
            into[host] = [built for _, built in sorted(entries, key=lambda e: e[0])]
    return result


def _rules(route: KubeObject, *, findings: Findings) -> list[_Rule]:
    if route.kind == GRPC_ROUTE:
        return [
            _Rule(
                matches=tuple(
                    _Match(
                        path=match.path,
                        headers=tuple(sorted(match.headers)),
                        rank=(
                            match.kind,
                            -len(match.service),
                            -len(match.method),
                            -len(match.headers),
                        ),
                    )
                    for match in rule.matches
                ),
                backends=rule.backends,
                request_headers=rule.request_headers,
                where=rule.where,
                position=rule.position,
            )
            for rule in grpc_rules(route, findings=findings)
        ]
    return [
        _Rule(
            matches=tuple(
                _Match(path=match.path, headers=match.headers, rank=match.rank())
                for match in rule.matches
            ),
            backends=rule.backends,
            request_headers=rule.request_headers,
            where=rule.where,
            position=rule.position,
        )
        for rule in http_rules(route, findings=findings)
    ]


def _one_route(
    route: KubeObject,
    *,
    view: StoreView,
    gateways: Gateways,
    resolver: BackendResolver,
    ranked: tuple[Ranked, Ranked],
    result: GatewayRoutes,
    findings: Findings,
) -> None:
    hostnames, problems = route_hostnames(route)
    if hostnames is None:
        if gateways.names_ours(route):
            for problem in problems:
                findings.rejected(route, reason=problem.reason, message=problem.message)
        return
    attachment = gateways.attach(route, hostnames=hostnames)
    if not attachment.ours:
        return  # another controller's route
    for problem in problems:
        findings.rejected(route, reason=problem.reason, message=problem.message)
    if not attachment.hosts and not attachment.tls_hosts:
        return  # reported by attach
    # gRPC needs HTTP/2 to the backend whatever the Service port says; an
    # HTTPRoute's backend speaks what its Service port says.
    protocol = ir.UpstreamProtocol.H2C if route.kind == GRPC_ROUTE else None
    # Collected first, so that a route that fails halfway adds nothing.
    mine: list[tuple[Ranked, str, tuple[object, ...], ir.Route]] = []
    plain, tls = ranked
    for rule in _rules(route, findings=findings):
        action = _action(
            route,
            rule,
            view=view,
            resolver=resolver,
            protocol=protocol,
            result=result,
            findings=findings,
        )
        for index, match in enumerate(rule.matches):
            built = _route(route, rule, match, index=index, action=action)
            order = (_KIND_RANK[route.kind], *match.rank, age(route), rule.position, index)
            mine.extend((plain, host, order, built) for host in attachment.hosts)
            mine.extend((tls, host, order, built) for host in attachment.tls_hosts)
    for by_host, host, order, built in mine:
        by_host[host].append((order, built))
    findings.accept(route, message=f"the {route.kind} is attached to a Gateway of xds-ingress")
    findings.resolved(route, message="every backendRef resolved")


def _action(
    route: KubeObject,
    rule: _Rule,
    *,
    view: StoreView,
    resolver: BackendResolver,
    protocol: ir.UpstreamProtocol | None,
    result: GatewayRoutes,
    findings: Findings,
) -> ir.RouteAction:
    weights: dict[str, int] = defaultdict(int)
    reason = BACKEND_NOT_FOUND if rule.backends else "NoBackends"
    for backend_ref in rule.backends:
        ref = backend_ref.ref
        if isinstance(ref, Invalid):
            reason = ref.reason
            if ref.reason == INVALID_KIND:
                findings.unresolved(route, reason=ref.reason, message=ref.message)
            else:
                findings.rejected(route, reason=ref.reason, message=ref.message)
            continue
        if not reference_granted(view, source=route, namespace=ref.namespace, service=ref.name):
            reason = REF_NOT_PERMITTED
            findings.unresolved(
                route,
                reason=REF_NOT_PERMITTED,
                message=f"{backend_ref.where}: Service {ref.namespace}/{ref.name} is in another "
                f"namespace, and no ReferenceGrant there allows this {route.kind} to use it",
            )
            continue
        resolved = resolver.resolve(ref, protocol=protocol)
        if isinstance(resolved, Invalid):
            reason = BACKEND_NOT_FOUND
            message = f"{backend_ref.where}: {resolved.message}"
            findings.unresolved(route, reason=BACKEND_NOT_FOUND, message=message)
            continue
        if backend_ref.weight > 0:
            result.backends[resolved.name] = resolved
            weights[resolved.name] += backend_ref.weight
    if not weights:
        # Keep the route, answering an error: its paths stay ours and it heals
        # by itself when the Service appears. The body names the reason only:
        # Service names are internal.
        return ir.DirectResponse(status=_error_status(route, rule), body=f"xds-ingress: {reason}\n")
    # Requests a missing backend would have taken go to the others: Envoy
    # cannot answer an error for a share of a split.
    if len(weights) == 1:
        return ir.Forward(backend=next(iter(weights)))
    return ir.WeightedForward(
        backends=tuple(
            ir.WeightedBackend(backend=name, weight=weight)
            for name, weight in sorted(weights.items())
        )
    )


def _error_status(route: KubeObject, rule: _Rule) -> int:
    if route.kind == GRPC_ROUTE:
        return UNAVAILABLE  # gRPC UNAVAILABLE: a client may retry it
    # What the Gateway API prescribes for an HTTPRoute rule that forwards
    # nowhere: 404 without backendRefs, 500 when none of them can be used.
    return NOT_FOUND if not rule.backends else INTERNAL_ERROR


def _route(
    route: KubeObject, rule: _Rule, match: _Match, *, index: int, action: ir.RouteAction
) -> ir.Route:
    return ir.Route(
        name=f"{route.namespace}/{route.name}/{rule.where}.matches[{index}]",
        path=match.path,
        action=action,
        origin=route.ref,
        headers=match.headers,
        request_headers=rule.request_headers,
    )


def merged_virtual_hosts(
    ingress_hosts: Iterable[ir.VirtualHost], gateway_routes: dict[str, list[ir.Route]]
) -> dict[str, list[ir.Route]]:
    """Routes by host from both APIs; on a shared host the Gateway API's come first.

    A GRPCRoute names methods, an HTTPRoute matches headers and methods an
    Ingress cannot, so the more specific routes go first.
    """
    merged: dict[str, list[ir.Route]] = defaultdict(list)
    for host, routes in gateway_routes.items():
        merged[host].extend(routes)
    for vhost in ingress_hosts:
        merged[vhost.name].extend(vhost.routes)
    return merged
