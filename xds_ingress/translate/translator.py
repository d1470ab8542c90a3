"""The translation, step by step: claim Ingresses, collect candidate routes,
settle conflicts, resolve backends, add the GRPCRoutes and HTTPRoutes
attached to our Gateways, give each TLS host (an Ingress's or an HTTPS
Gateway listener's) its certificate, then assemble sorted IR.

Every step reports user mistakes to one Findings collector and carries on,
so one bad object costs only its own routes, never the snapshot.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from xds_ingress import gc_pause, ir
from xds_ingress.sources.objects import INGRESS, KubeObject, ObjectKey
from xds_ingress.store import StoreView
from xds_ingress.translate.annotations import IngressOptions, ingress_options
from xds_ingress.translate.backends import BackendResolver
from xds_ingress.translate.certificates import CertificateCache
from xds_ingress.translate.classes import ClassPolicy
from xds_ingress.translate.findings import Findings, accepted_condition
from xds_ingress.translate.gateway_routes import gateway_routes, merged_virtual_hosts
from xds_ingress.translate.gateways import Gateways
from xds_ingress.translate.https import https_config
from xds_ingress.translate.memo import (
    DerivedMemo,
    HostPart,
    IngressReading,
    RouteInputs,
    TranslationMemo,
    VirtualHostInputs,
    ingress_key,
)
from xds_ingress.translate.precedence import host_order, resolve_conflicts, route_order
from xds_ingress.translate.rules import Candidate, ingress_candidates
from xds_ingress.translate.settings import ListenerSettings
from xds_ingress.translate.tls_rules import TlsRequest, tls_requests
from xds_ingress.translate.validation import Invalid

log = logging.getLogger(__name__)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

HTTP = "http"
UNAVAILABLE = 503


def translate(
    view: StoreView,
    *,
    settings: ListenerSettings,
    now: datetime | None = None,
    certificates: CertificateCache | None = None,
    memo: TranslationMemo | None = None,
) -> ir.Translation:
    """`now` is when certificates are checked for expiry (default: the present).

    Pass the same `certificates` cache to every call, so that a Secret is
    parsed once per change rather than once per translation, and the same
    `memo`, so that what an unchanged object gives is not worked out again.
    """
    memo = memo if memo is not None else TranslationMemo()
    # Translation makes no garbage cycles; at 10k Services the collector's
    # passes over the store and the growing IR were half its time.
    with gc_pause.paused():
        try:
            return _translate(
                view, settings=settings, now=now, certificates=certificates, memo=memo
            )
        except BaseException:
            # The Ingress memo moves on regardless (rotate): the hosts kept
            # must be regrouped from scratch next time, not from its changes.
            memo.hosts.invalidate()
            raise
        finally:
            memo.rotate()


def _translate(
    view: StoreView,
    *,
    settings: ListenerSettings,
    now: datetime | None,
    certificates: CertificateCache | None,
    memo: TranslationMemo,
) -> ir.Translation:
    cache = certificates if certificates is not None else CertificateCache()
    findings = Findings()
    policy = ClassPolicy.build(view, settings=settings)
    # Read for every Ingress of ours, routes won or not, so each bad value is reported.
    readings = memo.ingresses.readings(
        view.objects(INGRESS), policy=policy, read=_reading, findings=findings
    )
    resolver = BackendResolver(view, findings=findings, memo=memo.backends)
    virtual_hosts, backends = _ingress_hosts(
        readings, view=view, resolver=resolver, findings=findings, memo=memo
    )
    checked_at = now if now is not None else datetime.now(UTC)
    gateways = Gateways(
        view, settings=settings, findings=findings, now=checked_at, certificates=cache
    )
    attached = gateway_routes(view, gateways=gateways, resolver=resolver, findings=findings)
    backends.update(attached.backends)
    # HTTPS serves the Ingresses' hosts and the routes attached to HTTPS
    # Gateway listeners, through the same certificate assignment; a route
    # attached to a plain HTTP listener must not become reachable over TLS.
    https = https_config(
        [
            *(request for reading in readings for request in reading.tls_requests),
            *gateways.tls_requests(),
        ],
        view=view,
        virtual_hosts=_merged_virtual_hosts(virtual_hosts, attached.tls_routes),
        settings=settings,
        findings=findings,
        now=checked_at,
        cache=cache,
    )
    cache.rotate()
    findings.accept_conditions([reading.accepted for reading in readings])
    gateways.finish()
    config = ir.Config(
        listeners=(
            ir.Listener(
                name=HTTP,
                address=settings.listen_address,
                port=settings.http_port,
                route_config=HTTP,
                limits=settings.downstream,
            ),
        ),
        route_configs=(
            ir.RouteConfig(
                name=HTTP, virtual_hosts=_merged_virtual_hosts(virtual_hosts, attached.routes)
            ),
            *https.route_configs,
        ),
        backends=tuple(backends[name] for name in sorted(backends)),
        https_listeners=() if https.listener is None else (https.listener,),
        certificates=https.certificates,
    )
    return ir.Translation(config=config, conditions=findings.conditions())


# The readings of one Ingress alone (memoised per object, see memo.py).


def _reading(ingress: KubeObject, findings: Findings) -> IngressReading:
    return IngressReading(
        options=_guarded(
            ingress_options,
            ingress,
            findings,
            failure="xds-ingress failed to read its annotations; defaults are used",
            default=IngressOptions(),
        ),
        candidates=_guarded(
            _all_candidates,
            ingress,
            findings,
            failure="xds-ingress failed to translate it",
            default=(),
        ),
        tls_requests=_guarded(
            _all_tls_requests,
            ingress,
            findings,
            failure="xds-ingress failed to translate its spec.tls",
            default=(),
        ),
        accepted=accepted_condition(ingress, message="the Ingress is served by xds-ingress"),
    )


class _Read(Protocol[T_co]):
    def __call__(self, ingress: KubeObject, *, findings: Findings) -> T_co: ...


def _guarded(
    read: _Read[T], ingress: KubeObject, findings: Findings, *, failure: str, default: T
) -> T:
    """`read(ingress, findings=findings)`, or `default` if it raises.

    A translator bug on one odd object must not take down every other
    Ingress's routes; the condition (`failure`) makes it visible.
    """
    try:
        return read(ingress, findings=findings)
    except Exception:
        log.exception("%s: %s", ingress.ref, failure)
        findings.rejected(ingress, reason="InternalError", message=failure)
        return default


def _all_candidates(ingress: KubeObject, *, findings: Findings) -> tuple[Candidate, ...]:
    return tuple(ingress_candidates(ingress, findings=findings))


def _all_tls_requests(ingress: KubeObject, *, findings: Findings) -> tuple[TlsRequest, ...]:
    return tuple(tls_requests(ingress, findings=findings))


_DEFAULT_OPTIONS = IngressOptions()


def _ingress_hosts(
    readings: Sequence[IngressReading],
    *,
    view: StoreView,
    resolver: BackendResolver,
    findings: Findings,
    memo: TranslationMemo,
) -> tuple[tuple[ir.VirtualHost, ...], dict[str, ir.Backend]]:
    """The Ingresses' virtual hosts in host order, and the backends they forward to.

    Worked out host by host, each host from the readings of the Ingresses
    that name it: a host whose Ingresses are all unchanged keeps its part
    (see memo.HostMemo). `resolver` resolves against `view` with
    `memo.backends`, reporting to `findings`.
    """
    if memo.hosts.first_translation():
        return _all_hosts(readings, resolver=resolver, findings=findings, memo=memo)
    generations = memo.backends.generations
    added, dropped = memo.ingresses.changes()
    hosts = memo.hosts
    for host in hosts.hosts_to_visit(
        readings, added=added, dropped=dropped, generations=generations
    ):
        host_readings = hosts.readings_of(host)
        if not host_readings:
            hosts.forget(host)
            continue
        part = hosts.find(host, host_readings, view=view, generations=generations)
        if part is None:
            previous = hosts.previous(host)
            if previous is not None:
                _restore(host, previous, memo=memo)
            part = _host_part(host, host_readings, view=view, memo=memo)
        hosts.keep(host, part, generations)
    backends: dict[str, ir.Backend] = {}
    for part in hosts.parts():
        if part.findings is not None:
            findings.extend(part.findings)
        backends.update(part.backends)
    hosts.finish()
    return hosts.virtual_hosts(), backends


def _all_hosts(
    readings: Sequence[IngressReading],
    *,
    resolver: BackendResolver,
    findings: Findings,
    memo: TranslationMemo,
) -> tuple[tuple[ir.VirtualHost, ...], dict[str, ir.Backend]]:
    """The same as _ingress_hosts, every host at once, keeping no parts."""
    candidates = [candidate for reading in readings for candidate in reading.candidates]
    winners = resolve_conflicts(candidates, findings=findings)
    routes, backends = _routes(
        winners,
        resolver=resolver,
        options=_options(readings),
        findings=findings,
        memo=memo.routes,
    )
    return _virtual_hosts(routes, memo=memo.virtual_hosts), backends


def _options(readings: Iterable[IngressReading]) -> dict[ObjectKey, IngressOptions]:
    return {ingress_key(reading): reading.options for reading in readings if reading.candidates}


def _host_part(
    host: str,
    readings: Sequence[IngressReading],
    *,
    view: StoreView,
    memo: TranslationMemo,
) -> HostPart:
    found = Findings()
    candidates = [c for reading in readings for c in reading.candidates if c.host == host]
    winners = resolve_conflicts(candidates, findings=found)
    # Its own resolver, so that what resolving finds is this part's to replay.
    resolver = BackendResolver(view, findings=found, memo=memo.backends)
    routes, backends = _routes(
        winners, resolver=resolver, options=_options(readings), findings=found, memo=memo.routes
    )
    virtual_hosts = _virtual_hosts(routes, memo=memo.virtual_hosts)
    route_entries = []
    resolved = []
    for candidate in winners:
        entry = memo.routes.entry(id(candidate))
        if entry is not None:
            route_entries.append((id(candidate), entry))
        if not isinstance(candidate.backend, Invalid):
            resolved.append((candidate.backend, memo.backends.kept(candidate.backend)))
    return HostPart(
        readings=tuple(readings),
        resolved=tuple(resolved),
        virtual_host=virtual_hosts[0] if virtual_hosts else None,
        backends=backends,
        findings=found if found else None,
        route_entries=tuple(route_entries),
        virtual_host_entry=memo.virtual_hosts.entry(host),
    )


def _restore(host: str, part: HostPart, *, memo: TranslationMemo) -> None:
    """Put back the memo entries `part` was made from (see memo.HostPart)."""
    if part.virtual_host_entry is not None:
        memo.virtual_hosts.restore(host, part.virtual_host_entry)
    for key, entry in part.route_entries:
        memo.routes.restore(key, entry)
    for _, resolution in part.resolved:
        if resolution is not None:
            memo.backends.restore(resolution)


RoutesByHost = dict[str, list[tuple[Candidate, ir.Route]]]


def _routes(
    winners: Iterable[Candidate],
    *,
    resolver: BackendResolver,
    options: Mapping[ObjectKey, IngressOptions],
    findings: Findings,
    memo: DerivedMemo[int, RouteInputs, ir.Route],
) -> tuple[RoutesByHost, dict[str, ir.Backend]]:
    """Routes by host, and the backends they forward to (and no others)."""
    routes: RoutesByHost = defaultdict(list)
    backends: dict[str, ir.Backend] = {}
    for candidate in winners:
        ref = candidate.backend
        chosen = options.get(candidate.origin.key, _DEFAULT_OPTIONS)
        resolved = (
            ref
            if isinstance(ref, Invalid)
            else resolver.resolve(ref, protocol=chosen.backend_protocol)
        )
        if isinstance(resolved, Invalid):
            # Keep the route, answering 503: the path stays ours, and it heals
            # by itself when the Service appears.
            message = f"{candidate.where}: {resolved.message}"
            findings.unresolved(candidate.origin, reason=resolved.reason, message=message)
        else:
            backends[resolved.name] = resolved
        # Unchanged, all three inputs are the very objects of last time: the
        # route is found without comparing anything inside them.
        route = memo.get(id(candidate), (candidate, resolved, chosen.policy), _route)
        routes[candidate.host].append((candidate, route))
    return routes, backends


def _virtual_hosts(
    routes: RoutesByHost, *, memo: DerivedMemo[str, VirtualHostInputs, ir.VirtualHost]
) -> tuple[ir.VirtualHost, ...]:
    hosts = []
    for host in sorted(routes, key=host_order):
        found = routes[host]
        if len(found) > 1:
            found = sorted(found, key=lambda r: route_order(r[0]))
        ordered = tuple(route for _, route in found)
        hosts.append(memo.get(host, (host, ordered), _virtual_host_of))
    return tuple(hosts)


def _virtual_host_of(inputs: VirtualHostInputs) -> ir.VirtualHost:
    return _virtual_host(*inputs)


def _virtual_host(host: str, routes: tuple[ir.Route, ...]) -> ir.VirtualHost:
    return ir.VirtualHost(name=host, domains=(host,), routes=routes)


def _merged_virtual_hosts(
    ingress_hosts: tuple[ir.VirtualHost, ...], gateway_routes: dict[str, list[ir.Route]]
) -> tuple[ir.VirtualHost, ...]:
    # A host no Gateway API route shares keeps the Ingresses' virtual host
    # object, so that the resource builder finds it memoised by identity.
    if not gateway_routes:
        return ingress_hosts
    merged = merged_virtual_hosts(ingress_hosts, gateway_routes)
    own = {vhost.name: vhost for vhost in ingress_hosts}
    return tuple(
        own[host]
        if host not in gateway_routes and host in own
        else _virtual_host(host, tuple(merged[host]))
        for host in sorted(merged, key=host_order)
    )


def _route(inputs: RouteInputs) -> ir.Route:
    candidate, resolved, policy = inputs
    action: ir.RouteAction
    if isinstance(resolved, Invalid):
        # The body names the reason only: Service names are internal.
        action = ir.DirectResponse(status=UNAVAILABLE, body=f"xds-ingress: {resolved.reason}\n")
    else:
        action = ir.Forward(backend=resolved.name, policy=policy)
    origin = candidate.origin
    what = (
        "defaultBackend"
        if candidate.default_backend
        else f"{candidate.path.type}:{candidate.path.value}"
    )
    return ir.Route(
        name=f"{origin.namespace}/{origin.name}/{what}",
        path=candidate.path,
        action=action,
        origin=origin.ref,
    )
