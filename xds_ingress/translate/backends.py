"""Service references → Backends: the Service port, its protocol, its ready endpoints."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from xds_ingress import ir
from xds_ingress.sources.objects import SERVICE, KubeObject
from xds_ingress.store import StoreView
from xds_ingress.translate import fields
from xds_ingress.translate.findings import Findings
from xds_ingress.translate.rules import ServiceRef
from xds_ingress.translate.validation import Invalid

# appProtocol values that mean "HTTP/2 without TLS" to the upstream.
H2C_APP_PROTOCOLS = frozenset({"kubernetes.io/h2c", "grpc"})
_IP_VERSIONS = {"IPv4": 4, "IPv6": 6}


def backend_name(*, namespace: str, service: str, port: int) -> str:
    return f"{namespace}/{service}:{port}"


class BackendResolver:
    """Resolves ServiceRefs against one StoreView; each Backend is built once per call."""

    def __init__(self, view: StoreView, *, findings: Findings) -> None:
        self._view = view
        self._findings = findings
        self._built: dict[str, ir.Backend] = {}

    def resolve(self, ref: ServiceRef) -> ir.Backend | Invalid:
        service = self._view.get(SERVICE, ref.namespace, ref.name)
        if service is None:
            return Invalid(
                reason="BackendNotFound", message=f"Service {ref.namespace}/{ref.name} not found"
            )
        port = _service_port(service, ref.port)
        if port is None:
            return Invalid(
                reason="PortNotFound",
                message=f"Service {ref.namespace}/{ref.name} has no port {ref.port!r}",
            )
        number, port_name, app_protocol = port
        name = backend_name(namespace=ref.namespace, service=ref.name, port=number)
        if name not in self._built:
            self._built[name] = ir.Backend(
                name=name,
                protocol=_protocol(port_name=port_name, app_protocol=app_protocol),
                endpoints=self._endpoints(ref, port_name=port_name),
            )
        return self._built[name]

    def _endpoints(self, ref: ServiceRef, *, port_name: str) -> tuple[ir.Endpoint, ...]:
        found: set[ir.Endpoint] = set()
        for endpoint_slice in self._view.endpoint_slices(ref.namespace, ref.name):
            found.update(self._slice_endpoints(endpoint_slice, port_name=port_name))
        return tuple(sorted(found))

    def _slice_endpoints(self, endpoint_slice: KubeObject, *, port_name: str) -> set[ir.Endpoint]:
        body = endpoint_slice.body
        address_type = body.get("addressType")
        if address_type == "FQDN":
            return set()  # Envoy would need DNS clusters for these; not supported
        version = _IP_VERSIONS.get(address_type) if isinstance(address_type, str) else None
        target = _slice_port(body, port_name=port_name)
        if target is None:
            return set()
        found = set()
        for endpoint in fields.items(body.get("endpoints")):
            endpoint = fields.mapping(endpoint)
            # A missing (or null) ready condition means ready, per the EndpointSlice API.
            if fields.mapping(endpoint.get("conditions")).get("ready", True) not in (True, None):
                continue
            for address in fields.items(endpoint.get("addresses")):
                ip = _ip(address, version=version)
                if ip is None:
                    self._findings.rejected(
                        endpoint_slice,
                        reason="InvalidAddress",
                        message=f"address {address!r} is not an {address_type or 'IP'} address",
                    )
                    continue
                found.add(ir.Endpoint(address=ip, port=target))
        return found


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


def _ip(address: object, *, version: int | None) -> str | None:
    if not isinstance(address, str):
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if version is not None and ip.version != version:
        return None
    return str(ip)
