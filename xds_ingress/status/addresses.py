"""The addresses an Ingress publishes: its Envoy Service's, as status.loadBalancer.ingress.

As ingress-nginx and Contour do for --publish-service: the Service's load
balancer addresses when it has them, else its externalIPs, else its
clusterIP. Addresses are (ip, hostname) pairs, sorted, so that equal sets
compare equal however the API ordered them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Address = tuple[str, str]  # (ip, hostname); one of them is ""
Addresses = tuple[Address, ...]


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _entries(value: object) -> Addresses:
    found = set()
    for entry in value if isinstance(value, list | tuple) else ():
        entry = _mapping(entry)
        ip, hostname = str(entry.get("ip") or ""), str(entry.get("hostname") or "")
        if ip or hostname:
            found.add((ip, hostname))
    return tuple(sorted(found))


def service_addresses(service: Mapping[str, Any]) -> Addresses:
    balanced = _entries(
        _mapping(_mapping(service.get("status")).get("loadBalancer")).get("ingress")
    )
    if balanced:
        return balanced
    spec = _mapping(service.get("spec"))
    external = spec.get("externalIPs")
    if isinstance(external, list | tuple) and external:
        return tuple(sorted({(str(ip), "") for ip in external if ip}))
    cluster_ip = spec.get("clusterIP")
    if isinstance(cluster_ip, str) and cluster_ip and cluster_ip != "None":
        return ((cluster_ip, ""),)
    return ()


def ingress_addresses(ingress: Mapping[str, Any]) -> Addresses:
    """What an Ingress's status says now."""
    return _entries(_mapping(_mapping(ingress.get("status")).get("loadBalancer")).get("ingress"))


def status_patch(addresses: Addresses) -> dict[str, Any]:
    """A merge patch of the status subresource that sets exactly `addresses`."""
    entries = [
        {key: value for key, value in (("ip", ip), ("hostname", hostname)) if value}
        for ip, hostname in addresses
    ]
    return {"status": {"loadBalancer": {"ingress": entries}}}
