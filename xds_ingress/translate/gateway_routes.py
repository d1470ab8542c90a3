"""GRPCRoutes attached to our Gateways → IR routes by virtual host, in precedence order.

Envoy takes the first route that matches, so routes are sorted here by the
Gateway API's GRPCRoute precedence: exact method matches, then regular
expressions, then matches on any method; among them the longer service,
then the longer method, then more header matches; ties go to the older
route (creationTimestamp, then namespace/name) and then to rule order.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from xds_ingress import ir
from xds_ingress.sources.objects import GRPC_ROUTE, HTTP_ROUTE, KubeObject
from xds_ingress.store import StoreView
from xds_ingress.translate.backends import BackendResolver
from xds_ingress.translate.findings import Findings
from xds_ingress.translate.gateways import Gateways
from xds_ingress.translate.grpcroute import GrpcMatch, GrpcRule, grpc_rules, route_hostnames
from xds_ingress.translate.precedence import age
from xds_ingress.translate.refgrants import reference_granted
from xds_ingress.translate.validation import Invalid

log = logging.getLogger(__name__)

UNAVAILABLE = 503
# Reasons a backendRef fails to resolve, as the Gateway API names them.
BACKEND_NOT_FOUND = "BackendNotFound"
REF_NOT_PERMITTED = "RefNotPermitted"
INVALID_KIND = "InvalidKind"


Ranked = dict[str, list[tuple[tuple[object, ...], ir.Route]]]


@dataclass
class GatewayRoutes:
    """Routes by virtual host (each list in match order) and the Backends they use."""

    routes: dict[str, list[ir.Route]] = field(default_factory=lambda: defaultdict(list))
    backends: dict[str, ir.Backend] = field(default_factory=dict)


def grpc_routes(
    view: StoreView, *, gateways: Gateways, resolver: BackendResolver, findings: Findings
) -> GatewayRoutes:
    ranked: Ranked = defaultdict(list)
    result = GatewayRoutes()
    for route in view.objects(GRPC_ROUTE):
        try:
            _grpc_route(
                route,
                view=view,
                gateways=gateways,
                resolver=resolver,
                ranked=ranked,
                result=result,
                findings=findings,
            )
        except Exception:
            # A translator bug on one odd object must not take down every
            # other route; the condition makes it visible.
            log.exception("translating %s failed", route.ref)
            message = "xds-ingress failed to translate it"
            findings.rejected(route, reason="InternalError", message=message)
    for route in view.objects(HTTP_ROUTE):
        # Read by the sources already, so that adding support changes no
        # source; until then its author should hear that it does nothing.
        if gateways.names_ours(route):
            message = "HTTPRoute is not yet supported by xds-ingress; use a GRPCRoute or an Ingress"
            findings.rejected(route, reason="UnsupportedValue", message=message)
    for host, entries in ranked.items():
        result.routes[host] = [built for _, built in sorted(entries, key=lambda e: e[0])]
    return result


def _grpc_route(
    route: KubeObject,
    *,
    view: StoreView,
    gateways: Gateways,
    resolver: BackendResolver,
    ranked: Ranked,
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
    if not attachment.hosts:
        return  # reported by attach
    # Collected first, so that a route that fails halfway adds nothing.
    mine: list[tuple[str, tuple[object, ...], ir.Route]] = []
    for rule in grpc_rules(route, findings=findings):
        action = _action(
            route, rule, view=view, resolver=resolver, result=result, findings=findings
        )
        for index, match in enumerate(rule.matches):
            built = _route(route, rule, match, index=index, action=action)
            mine.extend(
                (host, _order(route, rule, match, index), built) for host in attachment.hosts
            )
    for host, order, built in mine:
        ranked[host].append((order, built))
    findings.accept(route, message="the GRPCRoute is attached to a Gateway of xds-ingress")
    findings.resolved(route, message="every backendRef resolved")


def _action(
    route: KubeObject,
    rule: GrpcRule,
    *,
    view: StoreView,
    resolver: BackendResolver,
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
                "namespace, and no ReferenceGrant there allows this GRPCRoute to use it",
            )
            continue
        # gRPC needs HTTP/2 to the backend whatever the Service port says.
        resolved = resolver.resolve(ref, protocol=ir.UpstreamProtocol.H2C)
        if isinstance(resolved, Invalid):
            reason = BACKEND_NOT_FOUND
            message = f"{backend_ref.where}: {resolved.message}"
            findings.unresolved(route, reason=BACKEND_NOT_FOUND, message=message)
            continue
        if backend_ref.weight > 0:
            result.backends[resolved.name] = resolved
            weights[resolved.name] += backend_ref.weight
    if not weights:
        # Keep the route, answering UNAVAILABLE: its methods stay ours and it
        # heals by itself when the Service appears. The body names the reason
        # only: Service names are internal.
        return ir.DirectResponse(status=UNAVAILABLE, body=f"xds-ingress: {reason}\n")
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


def _route(
    route: KubeObject, rule: GrpcRule, match: GrpcMatch, *, index: int, action: ir.RouteAction
) -> ir.Route:
    return ir.Route(
        name=f"{route.namespace}/{route.name}/{rule.where}.matches[{index}]",
        path=match.path,
        action=action,
        origin=route.ref,
        headers=tuple(sorted(match.headers)),
        request_headers=rule.request_headers,
    )


def _order(route: KubeObject, rule: GrpcRule, match: GrpcMatch, index: int) -> tuple[object, ...]:
    return (
        match.kind,
        -len(match.service),
        -len(match.method),
        -len(match.headers),
        age(route),
        rule.position,
        index,
    )


def merged_virtual_hosts(
    ingress_hosts: Iterable[ir.VirtualHost], gateway_routes: dict[str, list[ir.Route]]
) -> dict[str, list[ir.Route]]:
    """Routes by host from both APIs; on a shared host the GRPCRoute's come first.

    A GRPCRoute names methods, an Ingress usually whole prefixes, so the
    more specific routes go first.
    """
    merged: dict[str, list[ir.Route]] = defaultdict(list)
    for host, routes in gateway_routes.items():
        merged[host].extend(routes)
    for vhost in ingress_hosts:
        merged[vhost.name].extend(vhost.routes)
    return merged
