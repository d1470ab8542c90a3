"""Service references → Backends: the Service port, its protocol, its endpoints and their health.

Endpoints follow the EndpointSlice conditions: a ready endpoint takes new
calls; one that is terminating but still serving is kept as DRAINING, so
Envoy sends it nothing new but lets the calls it carries finish (a pod
rollout under load then fails no call); any other endpoint is left out.
"""

from __future__ import annotations

import ipaddress
import operator
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from xds_ingress import ir
from xds_ingress.sources.objects import ENDPOINT_SLICE, SECRET, SERVICE, KubeObject
from xds_ingress.store import StoreView
from xds_ingress.translate import fields
from xds_ingress.translate.annotations import (
    BACKEND_CA_SECRET,
    BackendOptions,
    service_health_check,
)
from xds_ingress.translate.ca_bundles import load_ca_bundle
from xds_ingress.translate.findings import Findings
from xds_ingress.translate.rules import ServiceRef
from xds_ingress.translate.validation import Invalid

# appProtocol values that mean "HTTP/2 without TLS" to the upstream.
H2C_APP_PROTOCOLS = frozenset({"kubernetes.io/h2c", "grpc"})
_IP_VERSIONS = {"IPv4": 4, "IPv6": 6}


def backend_name(
    *, namespace: str, service: str, port: int, protocol: ir.UpstreamProtocol | None = None
) -> str:
    """`protocol` is given when an Ingress overrides the one the Service port implies.

    Such a backend is another cluster ("ns/svc:port/h2c"), so two Ingresses
    that talk to one Service port differently each get what they asked for.
    """
    base = f"{namespace}/{service}:{port}"
    return base if protocol is None else f"{base}/{protocol}"


def _variant(options: BackendOptions, *, tls: ir.UpstreamTls | None) -> str:
    """What sets this Ingress's cluster apart from the Service port's default one.

    Two Ingresses that ask different things of one Service port (a load
    balancer, a CA) each get a cluster of their own, named so that Envoy's
    stats say which.
    """
    parts = []
    if options.load_balancer is not ir.LoadBalancer.ROUND_ROBIN:
        parts.append(str(options.load_balancer))
    if tls is not None and tls.ca is not None:
        parts.append(f"ca={options.ca_secret}")
    if tls is not None and options.sni is not None:
        parts.append(f"sni={options.sni}")
    return "".join(f"/{part}" for part in parts)


def service_host(*, namespace: str, service: str) -> str:
    """The DNS name a Service's serving certificate is usually issued for."""
    return f"{service}.{namespace}.svc"


# Every kind resolving a Backend reads.
_READ_KINDS = (SERVICE, ENDPOINT_SLICE, SECRET)


@dataclass(frozen=True, slots=True)
class Resolution:
    """One resolve() and what it read: valid while the view holds the same objects."""

    # Held so that its id cannot be reused while the entry lives.
    ref: ServiceRef
    protocol: ir.UpstreamProtocol | None
    service: KubeObject
    slices: tuple[KubeObject, ...]
    ca_secret: KubeObject | None
    backend: ir.Backend | Invalid
    findings: Findings | None  # None: nothing found (see translate/memo.py)

    def holds_in(self, view: StoreView) -> bool:
        """True while `view` has the very objects this was resolved from."""
        ref = self.ref
        if view.get(SERVICE, ref.namespace, ref.name) is not self.service:
            return False
        secret = ref.options.ca_secret
        ca_secret = None if secret is None else view.get(SECRET, ref.namespace, secret)
        return ca_secret is self.ca_secret and _same_objects(
            self.slices, view.endpoint_slices(ref.namespace, ref.name)
        )


class ResolvedBackends:
    """Backends resolved by earlier translations, kept while what they were read from is.

    Keyed by the identity of the ServiceRef: the rules of an unchanged
    Ingress come from the translation memo as the very same objects, so
    an unchanged route costs a few lookups to check that its Service, its
    EndpointSlices and its CA Secret are the objects it was resolved from.
    Like the other memos, each translation keeps only what it used.
    """

    def __init__(self) -> None:
        self._previous: dict[int, Resolution] = {}
        self._current: dict[int, Resolution] = {}
        # The generations of what resolving reads, in the view of the last
        # translation; `_trusted`: this translation's view holds the very
        # same objects, so what the last resolved holds without a check.
        self._generations: tuple[object, ...] | None = None
        self._trusted = False
        self._began = False

    def begin(self, view: StoreView) -> None:
        """Note the view this translation resolves against; once per translation.

        At 3000 Ingresses, checking each remembered Backend's Service and
        slices again was a fifth of the translation after an Ingress change.
        """
        if self._began:
            return
        self._began = True
        generations = view.generations(_READ_KINDS)
        self._trusted = generations is not None and generations == self._generations
        self._generations = generations

    @property
    def generations(self) -> tuple[object, ...] | None:
        """The generations of what resolving reads, in this translation's view (after begin)."""
        return self._generations

    def restore(self, resolved: Resolution) -> None:
        """Remember `resolved` again, unless something newer for its ServiceRef is remembered.

        For a caller that kept it while reusing a result made from it (see
        memo.HostMemo), so that resolving its ref again finds it.
        """
        key = id(resolved.ref)
        if key not in self._current and key not in self._previous:
            self._previous[key] = resolved

    def kept(self, ref: ServiceRef) -> Resolution | None:
        """What `ref` resolved to in this translation, if it resolved to a Backend or an error."""
        found = self._current.get(id(ref))
        return found if found is not None and found.ref is ref else None

    def find(self, ref: ServiceRef) -> Resolution | None:
        key = id(ref)
        found = self._current.get(key)
        if found is None:
            found = self._previous.get(key)
        return found if found is not None and found.ref is ref else None

    def holding(
        self, ref: ServiceRef, protocol: ir.UpstreamProtocol | None, view: StoreView
    ) -> Resolution | None:
        """What `ref` resolved to before, if it would resolve the same in `view`.

        Without a look at the objects while none of their kinds was replaced.
        """
        found = self.find(ref)
        if found is None or found.protocol is not protocol:
            return None
        return found if self._trusted or found.holds_in(view) else None

    def keep(self, resolved: Resolution) -> None:
        self._current[id(resolved.ref)] = resolved

    def rotate(self) -> None:
        """End a translation: keep what it used, drop the rest."""
        self._previous = self._current
        self._current = {}
        self._began = False


class BackendResolver:
    """Resolves ServiceRefs against one StoreView; each Backend is built once per call.

    With `memo`, a ServiceRef resolved by an earlier translation from the
    same objects is not resolved again.
    """

    def __init__(
        self, view: StoreView, *, findings: Findings, memo: ResolvedBackends | None = None
    ) -> None:
        self._view = view
        self._findings = findings
        self._memo = memo
        if memo is not None:
            memo.begin(view)
        self._built: dict[str, ir.Backend] = {}

    def resolve(
        self, ref: ServiceRef, *, protocol: ir.UpstreamProtocol | None = None
    ) -> ir.Backend | Invalid:
        """`protocol`: what an Ingress asks for instead of what the Service port implies."""
        if self._memo is not None:
            remembered = self._memo.holding(ref, protocol, self._view)
            if remembered is not None:
                return self._replayed(remembered)
        service = self._view.get(SERVICE, ref.namespace, ref.name)
        if service is None:
            return Invalid(
                reason="BackendNotFound", message=f"Service {ref.namespace}/{ref.name} not found"
            )
        if self._memo is None:
            return self._resolve(ref, service=service, protocol=protocol, findings=self._findings)
        slices = self._view.endpoint_slices(ref.namespace, ref.name)
        secret = ref.options.ca_secret
        ca_secret = None if secret is None else self._view.get(SECRET, ref.namespace, secret)
        # Resolved on its own, not shared through _built: the findings it
        # records must be all that the entry replays later.
        found = Findings()
        backend = self._resolve(
            ref, service=service, protocol=protocol, findings=found, share=False
        )
        return self._replayed(
            Resolution(ref, protocol, service, slices, ca_secret, backend, found if found else None)
        )

    def _replayed(self, resolved: Resolution) -> ir.Backend | Invalid:
        assert self._memo is not None
        self._memo.keep(resolved)
        if resolved.findings is not None:
            self._findings.extend(resolved.findings)
        return resolved.backend

    def _resolve(
        self,
        ref: ServiceRef,
        *,
        service: KubeObject,
        protocol: ir.UpstreamProtocol | None,
        findings: Findings,
        share: bool = True,
    ) -> ir.Backend | Invalid:
        port = _service_port(service, ref.port)
        if port is None:
            return Invalid(
                reason="PortNotFound",
                message=f"Service {ref.namespace}/{ref.name} has no port {ref.port!r}",
            )
        number, port_name, app_protocol = port
        implied = _protocol(port_name=port_name, app_protocol=app_protocol)
        chosen = implied if protocol is None else protocol
        tls = self._upstream_tls(ref, protocol=chosen)
        if isinstance(tls, Invalid):
            return tls
        name = backend_name(
            namespace=ref.namespace,
            service=ref.name,
            port=number,
            protocol=None if chosen is implied else chosen,
        ) + _variant(ref.options, tls=tls)
        built = self._built.get(name) if share else None
        if built is None:
            source = ir.EndpointSource(
                namespace=ref.namespace, service=ref.name, port_name=port_name
            )
            built = ir.Backend(
                name=name,
                protocol=chosen,
                endpoints=self.endpoints(source, findings=findings),
                tls=tls,
                health_check=self._health_check(service, protocol=chosen, findings=findings),
                endpoint_source=source,
                load_balancer=ref.options.load_balancer,
            )
            self._built[name] = built
        return built

    def _upstream_tls(
        self, ref: ServiceRef, *, protocol: ir.UpstreamProtocol
    ) -> ir.UpstreamTls | Invalid | None:
        if protocol is not ir.UpstreamProtocol.H2:
            # The CA and SNI annotations speak of TLS to the backend; a
            # backend without TLS has nothing to verify.
            return None
        options = ref.options
        sni = service_host(namespace=ref.namespace, service=ref.name)
        if options.sni is not None:
            sni = options.sni
        if options.ca_secret is None:
            return ir.UpstreamTls(sni=sni)
        ca = load_ca_bundle(self._view, namespace=ref.namespace, secret=options.ca_secret)
        if isinstance(ca, Invalid):
            # Fail closed: the Ingress asked for a verified backend, so its
            # routes answer 503 rather than reach it unverified.
            return Invalid(
                reason=ca.reason,
                message=f"annotation {BACKEND_CA_SECRET}: {ca.message}; "
                "the backend is not called unverified",
            )
        return ir.UpstreamTls(sni=sni, ca=ca)

    def _health_check(
        self, service: KubeObject, *, protocol: ir.UpstreamProtocol, findings: Findings
    ) -> ir.GrpcHealthCheck | None:
        check = service_health_check(service, findings=findings)
        if check is not None and protocol is ir.UpstreamProtocol.HTTP1:
            # grpc.health.v1 is a gRPC call: it needs HTTP/2 to the backend,
            # and Envoy refuses the cluster otherwise.
            findings.rejected(
                service,
                reason="InvalidAnnotation",
                message="annotation xds-ingress.io/health-check: grpc needs a gRPC port "
                "(appProtocol grpc or kubernetes.io/h2c); not checked over HTTP/1.1",
            )
            return None
        return check

    def endpoints(
        self, source: ir.EndpointSource, *, findings: Findings | None = None
    ) -> tuple[ir.Endpoint, ...]:
        """The endpoints the Service port's EndpointSlices list now, sorted.

        Bad addresses are reported to `findings` (default: the resolver's).
        """
        report = self._findings if findings is None else findings
        found: dict[tuple[str, int], ir.Endpoint] = {}
        for endpoint_slice in self._view.endpoint_slices(source.namespace, source.service):
            slice_endpoints = self._slice_endpoints(
                endpoint_slice, port_name=source.port_name, findings=report
            )
            for endpoint in slice_endpoints:
                key = (endpoint.address, endpoint.port)
                # An address in two slices (as it moves between them): ready wins.
                if key not in found or endpoint.health is ir.EndpointHealth.HEALTHY:
                    found[key] = endpoint
        # The dataclass's own ordering, by a key: its generated __lt__ builds
        # two tuples per comparison, a tenth of a 10k-Service translation.
        return tuple(sorted(found.values(), key=_endpoint_order))

    def _slice_endpoints(
        self, endpoint_slice: KubeObject, *, port_name: str, findings: Findings
    ) -> list[ir.Endpoint]:
        """The slice's usable endpoints; one listed twice comes out twice (endpoints() merges)."""
        body = endpoint_slice.body
        address_type = body.get("addressType")
        if address_type == "FQDN":
            return []  # Envoy would need DNS clusters for these; not supported
        version = _IP_VERSIONS.get(address_type) if isinstance(address_type, str) else None
        target = _slice_port(body, port_name=port_name)
        if target is None:
            return []
        found = []
        for endpoint in fields.items(body.get("endpoints")):
            endpoint = fields.mapping(endpoint)
            health = _health(fields.mapping(endpoint.get("conditions")))
            if health is None:
                continue
            for address in fields.items(endpoint.get("addresses")):
                ip = _ip(address, version=version)
                if ip is None:
                    findings.rejected(
                        endpoint_slice,
                        reason="InvalidAddress",
                        message=f"address {address!r} is not an {address_type or 'IP'} address",
                    )
                    continue
                found.append(ir.Endpoint(address=ip, port=target, health=health))
        return found


def _same_objects(before: tuple[KubeObject, ...], now: tuple[KubeObject, ...]) -> bool:
    return len(before) == len(now) and all(map(operator.is_, before, now))


# (address, port, health), made in C: a Python key function was called
# 100k times at 10k Services.
_endpoint_order = operator.attrgetter("address", "port", "health")


def _health(conditions: Mapping[str, object]) -> ir.EndpointHealth | None:
    """How Envoy treats an endpoint with these conditions; None: leave it out.

    Per the EndpointSlice API a missing (or null) condition means: ready →
    ready, serving → the value of ready, terminating → not terminating.
    """
    ready = conditions.get("ready")
    ready = True if ready is None else ready
    if ready is True:
        return ir.EndpointHealth.HEALTHY
    serving = conditions.get("serving")
    serving = ready if serving is None else serving
    if serving is True and conditions.get("terminating") is True:
        return ir.EndpointHealth.DRAINING
    return None


def _service_port(service: KubeObject, wanted: int | str) -> tuple[int, str, str] | None:
    """(port, name, appProtocol) of the spec.ports entry `wanted` names."""
    for entry in fields.items(fields.mapping(service.body.get("spec")).get("ports")):
        entry = fields.mapping(entry)
        number = fields.port_number(entry.get("port"))
        name = fields.text(entry.get("name")) or ""
        if number is not None and wanted in (number, name):
            return number, name, fields.text(entry.get("appProtocol")) or ""
    return None


def _slice_port(body: Mapping[str, object], *, port_name: str) -> int | None:
    # Slice ports carry the Service port's name ("" for a single unnamed
    # port) and the number on the pods.
    for entry in fields.items(body.get("ports")):
        entry = fields.mapping(entry)
        if (fields.text(entry.get("name")) or "") == port_name:
            return fields.port_number(entry.get("port"))
    return None


def _protocol(*, port_name: str, app_protocol: str) -> ir.UpstreamProtocol:
    if app_protocol.lower() in H2C_APP_PROTOCOLS or port_name.lower().startswith("grpc"):
        return ir.UpstreamProtocol.H2C
    return ir.UpstreamProtocol.HTTP1


def _canonical_ipv4(address: str) -> bool:
    """A dotted quad already in canonical form: nearly every address a cluster lists.

    Two C calls, several times cheaper than a regular expression and ~40x
    cheaper than ipaddress, which was a third of a 10k-Service translation.
    """
    try:
        return (
            socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, address)) == address
        )
    except (OSError, ValueError):  # not IPv4; ValueError: an embedded NUL
        return False


def _ip(address: object, *, version: int | None) -> str | None:
    if not isinstance(address, str):
        return None
    if version != 6 and _canonical_ipv4(address):
        return address
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if version is not None and ip.version != version:
        return None
    return str(ip)
