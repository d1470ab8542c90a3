"""Gateway API Gateways of ours, their listeners, and which routes attach where.

Every HTTP listener of every Gateway we claim joins Envoy's one plain HTTP
listener (its route configuration "http"); a Gateway listener's port is not
a separate Envoy port. What a listener contributes is its hostname and the
routes it lets attach (allowedRoutes), so attaching a route yields the
virtual host names it is served under: its hostnames intersected with the
listener's, as the Gateway API specifies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xds_ingress.sources.objects import GATEWAY, GATEWAY_CLASS, GATEWAY_GROUP, KubeObject
from xds_ingress.store import StoreView
from xds_ingress.translate import fields
from xds_ingress.translate.findings import Findings
from xds_ingress.translate.rules import CATCH_ALL_HOST
from xds_ingress.translate.settings import ListenerSettings
from xds_ingress.translate.validation import check_host

# Route kinds an HTTP listener takes when allowedRoutes.kinds is left out.
_HTTP_ROUTE_KINDS = frozenset({(GATEWAY_GROUP, "HTTPRoute"), (GATEWAY_GROUP, "GRPCRoute")})
_NOT_YET = frozenset({"HTTPS", "TLS"})

NO_MATCHING_PARENT = "NoMatchingParent"
NOT_ALLOWED_BY_LISTENERS = "NotAllowedByListeners"
NO_MATCHING_LISTENER_HOSTNAME = "NoMatchingListenerHostname"


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayListener:
    name: str
    port: int | None
    hostname: str | None  # None: any host
    all_namespaces: bool  # allowedRoutes.namespaces.from All (else Same)
    kinds: frozenset[tuple[str, str]]  # (group, kind) of the routes it takes
    # Why routes cannot attach to it (a protocol we do not serve yet), or "".
    unusable: str = ""

    def allows(self, *, gateway: KubeObject, route: KubeObject) -> bool:
        return (
            not self.unusable
            and (self.all_namespaces or route.namespace == gateway.namespace)
            and (GATEWAY_GROUP, route.kind) in self.kinds
        )


@dataclass(frozen=True, slots=True)
class Attachment:
    """Where a route is served: virtual host names, sorted; empty if nowhere."""

    hosts: tuple[str, ...]
    ours: bool  # some parentRef names a Gateway of ours


class Gateways:
    """The Gateways this controller claims in one StoreView, with their usable listeners."""

    def __init__(self, view: StoreView, *, settings: ListenerSettings, findings: Findings) -> None:
        self._findings = findings
        self._claim_all = settings.claim_classless
        classes = {
            gateway_class.name
            for gateway_class in view.objects(GATEWAY_CLASS)
            if fields.mapping(gateway_class.body.get("spec")).get("controllerName")
            == settings.controller_name
        }
        self.claimed: dict[tuple[str, str], tuple[KubeObject, tuple[GatewayListener, ...]]] = {}
        for gateway in view.objects(GATEWAY):
            class_name = fields.text(
                fields.mapping(gateway.body.get("spec")).get("gatewayClassName")
            )
            if settings.claim_classless or class_name in classes:
                listeners = self._listeners(gateway)
                self.claimed[gateway.namespace, gateway.name] = (gateway, listeners)
                findings.accept(gateway, message="the Gateway is served by xds-ingress")

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
            hosts.update(found)
        return Attachment(hosts=tuple(sorted(hosts)), ours=ours)

    def _attach_to(
        self,
        route: KubeObject,
        gateway: KubeObject,
        listeners: Sequence[GatewayListener],
        parent: object,
        hostnames: Sequence[str],
        *,
        where: str,
    ) -> set[str]:
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
            return set()
        allowed = [listener for listener in named if listener.allows(gateway=gateway, route=route)]
        if not allowed:
            why = "; ".join(
                f"listener {listener.name}: {listener.unusable or 'does not allow this route'}"
                for listener in named
            )
            self._reject(route, NOT_ALLOWED_BY_LISTENERS, f"{where}: {why}")
            return set()
        hosts = {
            host
            for listener in allowed
            for host in intersect_hostnames(listener.hostname, hostnames)
        }
        if not hosts:
            self._reject(
                route,
                NO_MATCHING_LISTENER_HOSTNAME,
                f"{where}: none of the route's hostnames match a listener's hostname",
            )
        return hosts

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
            listeners.append(self._listener(gateway, listener, name=name, where=where))
        return tuple(listeners)

    def _listener(
        self, gateway: KubeObject, listener: object, *, name: str, where: str
    ) -> GatewayListener:
        listener = fields.mapping(listener)
        protocol = fields.text(listener.get("protocol")) or ""
        unusable = ""
        if protocol in _NOT_YET:
            unusable = f"protocol {protocol} is not yet supported by xds-ingress"
        elif protocol != "HTTP":
            unusable = f"protocol {protocol!r} is not supported (use HTTP)"
        if unusable:
            self._findings.rejected(
                gateway, reason="UnsupportedProtocol", message=f"{where} ({name}): {unusable}"
            )
        hostname = listener.get("hostname")
        if hostname is not None:
            invalid = check_host(hostname) if isinstance(hostname, str) else None
            if not isinstance(hostname, str) or invalid is not None:
                unusable = unusable or "its hostname is invalid"
                message = invalid.message if invalid is not None else "hostname is not a string"
                self._findings.rejected(
                    gateway, reason="InvalidHostname", message=f"{where} ({name}): {message}"
                )
                hostname = None
        allowed = fields.mapping(listener.get("allowedRoutes"))
        source = fields.mapping(allowed.get("namespaces")).get("from") or "Same"
        if source not in ("Same", "All"):
            # Selector needs Namespace objects, which no source reads yet:
            # fall back to the safe side (this namespace only) and say so.
            self._findings.rejected(
                gateway,
                reason="UnsupportedValue",
                message=f"{where} ({name}): allowedRoutes.namespaces.from {source!r} is not "
                "supported; only routes in the Gateway's namespace attach",
            )
        return GatewayListener(
            name=name,
            port=fields.port_number(listener.get("port")),
            hostname=hostname,
            all_namespaces=source == "All",
            kinds=_kinds(allowed.get("kinds")),
            unusable=unusable,
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
