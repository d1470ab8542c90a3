"""Gateway API Gateways of ours, their listeners, and which routes attach where.

Envoy has one plain HTTP listener (--http-port, route configuration "http")
and one HTTPS listener (--https-port); a Gateway listener's own port is not
a separate Envoy port. Its protocol decides where it is served: an `HTTP`
listener joins the plain listener, an `HTTPS` listener (tls.mode Terminate)
the TLS one, with its certificate. A route attached to an HTTP listener is
served on the plain listener only, one attached to an HTTPS listener on the
TLS listener only, for the hosts that listener serves.

What a listener contributes is its hostname and the routes it lets attach
(allowedRoutes), so attaching a route yields the virtual host names it is
served under: its hostnames intersected with the listener's, as the Gateway
API specifies. An HTTPS listener without a hostname serves the names its
certificate holds (a client's SNI must name one of them anyway).

allowedRoutes.namespaces `from: Selector` matches the labels of the route's
Namespace (the store keeps them), plus the `kubernetes.io/metadata.name`
label the API server puts on every Namespace, so a folder without Namespace
objects can still select by name. A listener whose selector is missing or
invalid takes no routes at all, and says why in its Accepted condition:
Selector asked for "only these namespaces", and guessing which would be
worse than serving none.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from xds_ingress.sources.objects import GATEWAY, GATEWAY_CLASS, GATEWAY_GROUP, KubeObject
from xds_ingress.store import StoreView
from xds_ingress.translate import fields
from xds_ingress.translate.certificates import CertificateCache
from xds_ingress.translate.findings import Findings
from xds_ingress.translate.gateway_tls import ListenerCertificate, listener_certificate
from xds_ingress.translate.label_selector import LabelSelector, parse_selector
from xds_ingress.translate.rules import CATCH_ALL_HOST
from xds_ingress.translate.settings import ListenerSettings
from xds_ingress.translate.tls_rules import TlsRequest
from xds_ingress.translate.validation import Invalid, check_host

HTTP_ROUTE_KIND = (GATEWAY_GROUP, "HTTPRoute")
GRPC_ROUTE_KIND = (GATEWAY_GROUP, "GRPCRoute")
# Route kinds an HTTP or HTTPS listener takes (all of them when
# allowedRoutes.kinds is left out).
_HTTP_ROUTE_KINDS = frozenset({HTTP_ROUTE_KIND, GRPC_ROUTE_KIND})
HTTP = "HTTP"
HTTPS = "HTTPS"

NO_MATCHING_PARENT = "NoMatchingParent"
NOT_ALLOWED_BY_LISTENERS = "NotAllowedByListeners"
PROGRAMMED = "Programmed"
NO_MATCHING_LISTENER_HOSTNAME = "NoMatchingListenerHostname"

ListenerKey = tuple[str, str, str]  # Gateway namespace, Gateway name, listener name
# A namespace's name → its labels (empty for one never seen).
NamespaceLabels = Callable[[str], Mapping[str, str]]

SAME = "Same"
ALL = "All"
SELECTOR = "Selector"
# Set by the API server on every Namespace (Kubernetes 1.21+), immutable.
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def no_labels(namespace: str) -> Mapping[str, str]:
    return {}


@dataclass(frozen=True, slots=True)
class RouteNamespaces:
    """A listener's allowedRoutes.namespaces: the namespaces whose routes it takes."""

    source: str = SAME  # SAME, ALL or SELECTOR
    selector: LabelSelector | None = None  # SELECTOR: None if missing or invalid

    def admits(self, namespace: str, *, gateway_namespace: str, labels: NamespaceLabels) -> bool:
        if self.source == ALL:
            return True
        if self.source == SELECTOR:
            return self.selector is not None and self.selector.matches(
                {**labels(namespace), NAMESPACE_NAME_LABEL: namespace}
            )
        return namespace == gateway_namespace


def route_namespaces(allowed_routes: object) -> tuple[RouteNamespaces, str]:
    """A listener's allowedRoutes.namespaces, and what is wrong with it ("" if nothing).

    A `from` we do not know is taken as Same (the safe side); a Selector
    without a usable selector admits no namespace.
    """
    namespaces = fields.mapping(fields.mapping(allowed_routes).get("namespaces"))
    source = namespaces.get("from") or SAME
    if source == SELECTOR:
        raw = namespaces.get("selector")
        if raw is None:
            return RouteNamespaces(SELECTOR), (
                "allowedRoutes.namespaces.selector is required with from 'Selector'"
            )
        selector = parse_selector(raw)
        if isinstance(selector, Invalid):
            return RouteNamespaces(SELECTOR), (
                f"allowedRoutes.namespaces.selector is invalid: {selector.message}"
            )
        return RouteNamespaces(SELECTOR, selector), ""
    if source not in (SAME, ALL):
        return RouteNamespaces(SAME), (
            f"allowedRoutes.namespaces.from {source!r} is not supported; "
            "only routes in the Gateway's namespace attach"
        )
    return RouteNamespaces(source), ""


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayListener:
    name: str
    port: int | None
    hostname: str | None  # None: any host
    namespaces: RouteNamespaces
    kinds: frozenset[tuple[str, str]]  # (group, kind) of the routes it takes
    # Why routes cannot attach to it (a protocol we do not serve, no
    # servable certificate), or "".
    unusable: str = ""
    # HTTPS: the certificate it terminates TLS with; None on a plain listener.
    tls: ListenerCertificate | None = None
    position: int = 0  # index in spec.listeners

    def refusal(self, *, gateway: KubeObject, route: KubeObject, labels: NamespaceLabels) -> str:
        """Why `route` cannot attach to this listener; "" if it can."""
        if self.unusable:
            return self.unusable
        if (GATEWAY_GROUP, route.kind) not in self.kinds:
            return f"its allowedRoutes.kinds does not include {route.kind}"
        if self.namespaces.admits(
            route.namespace, gateway_namespace=gateway.namespace, labels=labels
        ):
            return ""
        if self.namespaces.source == SELECTOR:
            return (
                f"namespace {route.namespace} does not match its allowedRoutes.namespaces.selector"
            )
        return f"it takes routes from namespace {gateway.namespace} only"

    def served_hostnames(self) -> tuple[str | None, ...]:
        """The hostnames route hostnames are intersected with (None: any)."""
        if self.tls is None or self.hostname is not None:
            return (self.hostname,)
        if self.tls.certificate is None:
            return ()
        return self.tls.certificate.sans


@dataclass(frozen=True, slots=True)
class Attachment:
    """Where a route is served: virtual host names, sorted; empty if nowhere."""

    hosts: tuple[str, ...]  # on the plain HTTP listener
    ours: bool  # some parentRef names a Gateway of ours
    tls_hosts: tuple[str, ...] = ()  # on the HTTPS listener


class Gateways:
    """The Gateways this controller claims in one StoreView, with their usable listeners.

    One per translation: attaching routes records which hosts each HTTPS
    listener serves, for `tls_requests`.
    """

    def __init__(
        self,
        view: StoreView,
        *,
        settings: ListenerSettings,
        findings: Findings,
        now: datetime | None = None,
        certificates: CertificateCache | None = None,
    ) -> None:
        self._view = view
        self._findings = findings
        self._now = now if now is not None else datetime.now(UTC)
        self._certificates = certificates if certificates is not None else CertificateCache()
        self._claim_all = settings.claim_classless
        self._tls_served: dict[ListenerKey, set[str]] = defaultdict(set)
        ours = [
            gateway_class
            for gateway_class in view.objects(GATEWAY_CLASS)
            if fields.mapping(gateway_class.body.get("spec")).get("controllerName")
            == settings.controller_name
        ]
        # A class of ours is accepted as soon as it exists, Gateways or not:
        # its Accepted condition is how a user learns the controller is there.
        for gateway_class in ours:
            findings.accept(gateway_class, message="xds-ingress serves Gateways of this class")
        classes = {gateway_class.name for gateway_class in ours}
        self.claimed: dict[tuple[str, str], tuple[KubeObject, tuple[GatewayListener, ...]]] = {}
        for gateway in view.objects(GATEWAY):
            class_name = fields.text(
                fields.mapping(gateway.body.get("spec")).get("gatewayClassName")
            )
            if settings.claim_classless or class_name in classes:
                listeners = self._listeners(gateway)
                self.claimed[gateway.namespace, gateway.name] = (gateway, listeners)

    def names_ours(self, route: KubeObject) -> bool:
        """Whether some parentRef of `route` names a Gateway of ours."""
        for raw in fields.items(fields.mapping(route.body.get("spec")).get("parentRefs")):
            parent = fields.mapping(raw)
            namespace = fields.text(parent.get("namespace")) or route.namespace
            if (namespace, fields.text(parent.get("name")) or "") in self.claimed:
                return True
        return False

    def attach(self, route: KubeObject, *, hostnames: Sequence[str]) -> Attachment:
        """`hostnames` are the route's (valid) spec.hostnames; empty means any.

        Each parentRef of ours that attaches nowhere is reported on the route.
        """
        hosts: set[str] = set()
        tls_hosts: dict[ListenerKey, set[str]] = defaultdict(set)
        ours = False
        for index, raw in enumerate(
            fields.items(fields.mapping(route.body.get("spec")).get("parentRefs"))
        ):
            parent = fields.mapping(raw)
            if (fields.text(parent.get("group")) or GATEWAY_GROUP) != GATEWAY_GROUP or (
                fields.text(parent.get("kind")) or GATEWAY
            ) != GATEWAY:
                continue  # another kind of parent (e.g. a mesh Service): not ours
            namespace = fields.text(parent.get("namespace")) or route.namespace
            name = fields.text(parent.get("name")) or ""
            where = f"spec.parentRefs[{index}] (Gateway {namespace}/{name})"
            claimed = self.claimed.get((namespace, name))
            if claimed is None:
                # A Gateway of another controller is none of our business; a
                # missing one is reported only where every object is ours.
                if self._claim_all:
                    ours = True
                    self._reject(route, NO_MATCHING_PARENT, f"{where}: no such Gateway")
                continue
            ours = True
            gateway, listeners = claimed
            found = self._attach_to(route, gateway, listeners, parent, hostnames, where=where)
            for listener, listener_hosts in found:
                if listener.tls is None:
                    hosts.update(listener_hosts)
                else:
                    tls_hosts[namespace, name, listener.name].update(listener_hosts)
        if self._claim_all and not fields.items(
            fields.mapping(route.body.get("spec")).get("parentRefs")
        ):
            # Where every object is ours, a route attached to nothing is a mistake.
            ours = True
            self._reject(route, NO_MATCHING_PARENT, "spec.parentRefs names no Gateway")
        for key, served in tls_hosts.items():
            self._tls_served[key].update(served)
        return Attachment(
            hosts=tuple(sorted(hosts)),
            ours=ours,
            tls_hosts=tuple(sorted({host for served in tls_hosts.values() for host in served})),
        )

    def tls_requests(self) -> list[TlsRequest]:
        """One request per HTTPS listener with a certificate, for the hosts it serves.

        Call after every route is attached: a listener serves its own
        hostname (or its certificate's names) and every host its routes
        were attached under.
        """
        requests = []
        for (namespace, name), (gateway, listeners) in sorted(self.claimed.items()):
            for listener in listeners:
                tls = listener.tls
                if tls is None or tls.certificate is None or listener.unusable:
                    continue
                own = (listener.hostname,) if listener.hostname else tls.certificate.sans
                hosts = {*own, *self._tls_served.get((namespace, name, listener.name), ())}
                hosts.discard(CATCH_ALL_HOST)
                requests.append(
                    TlsRequest(
                        origin=gateway,
                        secret=tls.secret,
                        secret_namespace=tls.secret_namespace,
                        hosts=tuple(sorted(hosts)),
                        rule_hosts=(),
                        where=tls.where,
                        position=listener.position,
                    )
                )
        return requests

    def finish(self) -> None:
        """Mark each Gateway Accepted unless some finding rejected part of it.

        Call last, after every other finding on the Gateways. A listener's
        problem is an Accepted=False finding on its Gateway whose message
        starts with "spec.listeners[i] (name)": the status writer splits them
        into status.listeners by that prefix, and by reason into Accepted and
        ResolvedRefs (InvalidCertificateRef, RefNotPermitted, InvalidRouteKinds).
        """
        for gateway, _ in self.claimed.values():
            self._findings.accept(gateway, message="the Gateway is served by xds-ingress")

    def _attach_to(
        self,
        route: KubeObject,
        gateway: KubeObject,
        listeners: Sequence[GatewayListener],
        parent: object,
        hostnames: Sequence[str],
        *,
        where: str,
    ) -> list[tuple[GatewayListener, set[str]]]:
        parent = fields.mapping(parent)
        section = fields.text(parent.get("sectionName"))
        port = fields.port_number(parent.get("port"))
        named = [
            listener
            for listener in listeners
            if (section is None or listener.name == section)
            and (port is None or listener.port == port)
        ]
        if not named:
            self._reject(route, NO_MATCHING_PARENT, f"{where}: no listener matches")
            return []
        refusals = [
            listener.refusal(gateway=gateway, route=route, labels=self._view.namespace_labels)
            for listener in named
        ]
        allowed = [
            listener for listener, refusal in zip(named, refusals, strict=True) if not refusal
        ]
        if not allowed:
            why = "; ".join(
                f"listener {listener.name}: {refusal}"
                for listener, refusal in zip(named, refusals, strict=True)
            )
            self._reject(route, NOT_ALLOWED_BY_LISTENERS, f"{where}: {why}")
            return []
        found = []
        for listener in allowed:
            hosts = {
                host
                for served in listener.served_hostnames()
                for host in intersect_hostnames(served, hostnames)
            }
            if hosts:
                found.append((listener, hosts))
        if not found:
            self._reject(
                route,
                NO_MATCHING_LISTENER_HOSTNAME,
                f"{where}: none of the route's hostnames match a listener's hostname",
            )
        return found

    def _reject(self, route: KubeObject, reason: str, message: str) -> None:
        self._findings.rejected(route, reason=reason, message=message)

    def _listeners(self, gateway: KubeObject) -> tuple[GatewayListener, ...]:
        spec = fields.mapping(gateway.body.get("spec"))
        listeners = []
        for index, raw in enumerate(fields.items(spec.get("listeners"))):
            listener = fields.mapping(raw)
            where = f"spec.listeners[{index}]"
            name = fields.text(listener.get("name"))
            if not name:
                self._findings.rejected(gateway, reason="Invalid", message=f"{where} has no name")
                continue
            listeners.append(self._listener(gateway, listener, name=name, index=index))
        return tuple(listeners)

    def _listener(
        self, gateway: KubeObject, listener: object, *, name: str, index: int
    ) -> GatewayListener:
        listener = fields.mapping(listener)
        where = f"spec.listeners[{index}] ({name})"

        def problem(reason: str, message: str) -> None:
            # The message starts with `where`: that is how the status writer
            # knows which listener it is about.
            self._findings.rejected(gateway, reason=reason, message=message)

        protocol = fields.text(listener.get("protocol")) or ""
        unusable = ""
        tls: ListenerCertificate | None = None
        if protocol == HTTPS:
            found = listener_certificate(
                self._view,
                gateway,
                listener.get("tls"),
                where=where,
                now=self._now,
                cache=self._certificates,
            )
            if isinstance(found, Invalid):
                unusable = found.message
                problem(found.reason, found.message)
            else:
                tls = found
                for refused in found.problems:
                    problem(refused.reason, refused.message)
                if found.certificate is None:
                    unusable = "none of its certificateRefs is a servable certificate"
            if unusable:
                # Accepted (the listener is valid) but not programmed: the
                # status writer reads this as the listener's Programmed.
                self._findings.problem(
                    gateway, type=PROGRAMMED, reason="Invalid", message=f"{where}: {unusable}"
                )
        elif protocol != HTTP:
            unusable = f"protocol {protocol!r} is not supported (use HTTP or HTTPS)"
            problem("UnsupportedProtocol", f"{where}: {unusable}")
        port = listener.get("port")
        if fields.port_number(port) is None:
            unusable = unusable or "its port is invalid"
            problem("UnsupportedValue", f"{where}: port {port!r} is not in 1-65535")
        hostname = listener.get("hostname")
        if hostname is not None:
            invalid = check_host(hostname) if isinstance(hostname, str) else None
            if not isinstance(hostname, str) or invalid is not None:
                unusable = unusable or "its hostname is invalid"
                message = invalid.message if invalid is not None else "hostname is not a string"
                problem("InvalidHostname", f"{where}: {message}")
                hostname = None
        allowed = fields.mapping(listener.get("allowedRoutes"))
        namespaces, wrong = route_namespaces(allowed)
        if wrong:
            problem("UnsupportedValue", f"{where}: {wrong}")
            if namespaces.source == SELECTOR:
                unusable = unusable or "its allowedRoutes.namespaces.selector is unusable"
        kinds = _kinds(allowed.get("kinds"))
        unknown = sorted(kind for _, kind in kinds - _HTTP_ROUTE_KINDS)
        if unknown:
            problem(
                "InvalidRouteKinds",
                f"{where}: allowedRoutes.kinds {', '.join(unknown)} cannot attach to an "
                f"{protocol} listener (only HTTPRoute and GRPCRoute)",
            )
        return GatewayListener(
            name=name,
            port=fields.port_number(listener.get("port")),
            hostname=hostname,
            namespaces=namespaces,
            kinds=kinds & _HTTP_ROUTE_KINDS,
            unusable=unusable,
            tls=tls,
            position=index,
        )


def _kinds(raw: object) -> frozenset[tuple[str, str]]:
    kinds = {
        (fields.text(entry.get("group")) or GATEWAY_GROUP, fields.text(entry.get("kind")) or "")
        for entry in map(fields.mapping, fields.items(raw))
    }
    return frozenset(kinds) or _HTTP_ROUTE_KINDS


def intersect_hostnames(listener: str | None, route_hostnames: Sequence[str]) -> list[str]:
    """The virtual hosts a route is served under on one listener.

    Per the Gateway API: no hostname on either side means any host; otherwise
    a route hostname matches when equal to the listener's or when one is a
    wildcard covering the other, and the more specific of the two is used.
    """
    if not route_hostnames:
        return [listener or CATCH_ALL_HOST]
    if listener is None:
        return list(route_hostnames)
    found = []
    for route in route_hostnames:
        if route == listener or (_is_wildcard(listener) and _covers(listener, route)):
            found.append(route)
        elif _is_wildcard(route) and _covers(route, listener):
            found.append(listener)
    return found


def _is_wildcard(host: str) -> bool:
    return host.startswith("*.")


def _covers(wildcard: str, host: str) -> bool:
    """ "*.example.com" covers "a.example.com", "a.b.example.com" and "*.a.example.com"."""
    suffix = wildcard[1:]  # ".example.com"
    name = host[1:] if _is_wildcard(host) else host
    return name.endswith(suffix) and len(name) > len(suffix)
