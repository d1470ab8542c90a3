"""Command-line values, parsed and checked in one place.

Nothing else in the package reads flags or the environment: the CLI builds
these values and hands them down.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path


class SettingError(ValueError):
    """A value a user gave is wrong; the message says which and why."""


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_port(text: str, *, flag: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise SettingError(f"{flag}: expected a port number, got {text!r}") from None
    if not 0 < port < 65536:
        raise SettingError(f"{flag}: port {port} is out of range 1-65535")
    return port


def parse_host_port(text: str, *, flag: str) -> HostPort:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise SettingError(f"{flag}: expected HOST:PORT, got {text!r}")
    host = host.removeprefix("[").removesuffix("]")
    return HostPort(host=host, port=parse_port(port_text, flag=flag))


def parse_address(text: str, *, flag: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise SettingError(f"{flag}: expected an IP address, got {text!r}") from None


# The --source value that watches the cluster instead of a folder.
KUBERNETES_SOURCE = "kubernetes"

# RFC 1123 label, what Kubernetes accepts as a namespace name.
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def parse_namespace(text: str, *, flag: str) -> str:
    if not _NAMESPACE.fullmatch(text):
        raise SettingError(f"{flag}: {text!r} is not a Kubernetes namespace name")
    return text


def parse_namespaced_name(text: str, *, flag: str) -> tuple[str, str]:
    """NAMESPACE/NAME, as in --publish-service."""
    namespace, sep, name = text.partition("/")
    if not sep or not _NAMESPACE.fullmatch(namespace) or not _NAMESPACE.fullmatch(name):
        raise SettingError(f"{flag}: expected NAMESPACE/NAME of a Service, got {text!r}")
    return namespace, name


@dataclass(frozen=True, slots=True)
class ServerTls:
    """mTLS on the xDS and admin ports: PEM files, read again when they change.

    Clients (Envoys, operators' tools) must present a certificate that
    `client_ca_file` signed.
    """

    cert_file: Path
    key_file: Path
    client_ca_file: Path


@dataclass(frozen=True, slots=True)
class ServeSettings:
    source: str
    xds_address: HostPort
    listen_address: str
    http_port: int
    https_port: int
    holdoff_seconds: float
    max_holdoff_seconds: float
    # Only with source == KUBERNETES_SOURCE: the kubeconfig to use (None: in
    # cluster, else the default one), and the one namespace to watch (None: all).
    kubeconfig: str | None = None
    watch_namespace: str | None = None
    # A second port serving only inspection (admin API, CSDS, health,
    # reflection), and Prometheus metrics over HTTP; None: not served.
    admin_address: HostPort | None = None
    metrics_address: HostPort | None = None
    # The oldest TLS version the HTTPS listener accepts: "1.2" or "1.3".
    tls_min_version: str = "1.2"
    # How old a client connection may grow before Envoy drains it (GOAWAY),
    # so long-lived clients rebalance over Envoy replicas; 0: no limit.
    max_connection_duration_seconds: int = 600
    # Only with source == KUBERNETES_SOURCE: the Envoy Service (namespace,
    # name) whose addresses every Ingress we serve publishes in its status
    # (None: none is written), and where the Lease that picks the one
    # replica writing status lives.
    publish_service: tuple[str, str] | None = None
    leader_election_namespace: str = "default"
    # mTLS on the xDS and admin ports; None: plaintext, which the CLI gives
    # only with an explicit --insecure (the demo and in-process tests use it).
    xds_tls: ServerTls | None = None
    # Plaintext gRPC health alone (kubelet's gRPC probes cannot speak TLS);
    # None: not served.
    health_address: HostPort | None = None
    # With a folder source: seconds between looks at the folder.
    poll_seconds: float = 0.25
