"""The intermediate representation between Kubernetes objects and Envoy.

`translate/` produces these values from the store; `resources/` turns them
into Envoy protobufs. They are plain frozen data: equal inputs give equal
values, so unchanged parts of a configuration hash and memoise to the same
Envoy resources. Every tuple is sorted by whoever builds it, so that the
order of objects in the sources never changes the output.
"""

from __future__ import annotations

import enum
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# _HASHED_ONCE: ObjectRef, Backend, VirtualHost, RouteConfig and Condition
# cache their hash. A frozen dataclass hashes its whole tree on every call,
# and the resource builder's memos hash every one of them on every build: at
# 3000 hosts that was most of a build after a one-host change. A value built
# anew (replace() included) starts without one.


def _hashed_once(*names: str) -> Callable[[Any], int]:
    """A __hash__ over the fields `names`, worked out once and kept in `_hash`."""
    fields_of = operator.attrgetter(*names)

    def __hash__(self: Any) -> int:
        found: int | None = self._hash
        if found is None:
            found = hash(fields_of(self))
            object.__setattr__(self, "_hash", found)
        return found

    return __hash__


@dataclass(frozen=True, slots=True, order=True)
class ObjectRef:
    """The source object a piece of configuration came from.

    `source` is where the object was read (a file path for the file source,
    empty for Kubernetes), so log lines can name the file to fix.
    """

    kind: str
    namespace: str
    name: str
    source: str = field(default="", compare=False)
    _hash: int | None = field(default=None, init=False, repr=False, compare=False)

    __hash__ = _hashed_once("kind", "namespace", "name")

    def __str__(self) -> str:
        where = f" ({self.source})" if self.source else ""
        return f"{self.kind} {self.namespace}/{self.name}{where}"


class UpstreamProtocol(enum.StrEnum):
    HTTP1 = "http1"
    H2C = "h2c"
    # HTTP/2 over TLS (ALPN h2): a backend that serves gRPC with TLS. Such a
    # Backend carries `tls`.
    H2 = "h2"


class EndpointHealth(enum.StrEnum):
    """What the EndpointSlice says of an endpoint, as Envoy should treat it."""

    # Ready: takes new calls.
    HEALTHY = "healthy"
    # Serving but terminating: takes no new calls, finishes those in flight.
    DRAINING = "draining"


@dataclass(frozen=True, slots=True, order=True)
class Endpoint:
    address: str
    port: int
    health: EndpointHealth = EndpointHealth.HEALTHY


@dataclass(frozen=True, slots=True, repr=False)
class CaBundle:
    """CA certificates a peer's certificate must chain to, as Envoy fetches them over SDS.

    `name` is "namespace/secretName/ca.crt": the SDS resource name, distinct
    from the TlsCertificate of the same Secret (cert-manager puts both in one).
    `ca_pem` is normalised (re-encoded from what was parsed).
    """

    name: str
    ca_pem: str

    def __repr__(self) -> str:
        return f"CaBundle(name={self.name!r}, ca_pem=<{len(self.ca_pem)} chars>)"


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamTls:
    """TLS from Envoy to the backend; `sni` is the name sent (the Service's host).

    With `ca`, the backend's certificate must chain to it and (when `sni` is
    not "") name `sni`; without, the hop is encrypted but not authenticated.
    `sni` "" sends no SNI.
    """

    sni: str
    ca: CaBundle | None = None


class LoadBalancer(enum.StrEnum):
    """How Envoy picks an endpoint for each call."""

    ROUND_ROBIN = "round-robin"
    LEAST_REQUEST = "least-request"
    # Consistent hashing on a request header (RoutePolicy.hash_header).
    RING_HASH = "ring-hash"


@dataclass(frozen=True, slots=True, kw_only=True)
class GrpcHealthCheck:
    """Active grpc.health.v1 checks; `service` "" asks about the whole server."""

    service: str = ""


@dataclass(frozen=True, slots=True, order=True)
class EndpointSource:
    """Where a Backend's endpoints come from: the EndpointSlices of one Service port.

    Kept on the Backend so that an EndpointSlice change can refresh the
    endpoints of exactly the Backends it feeds, without a whole translation.
    """

    namespace: str
    service: str
    # The Service port's name, as EndpointSlice ports carry it ("" if unnamed).
    port_name: str


@dataclass(frozen=True, slots=True)
class Backend:
    """One Service port: an Envoy cluster and its load assignment.

    `name` is unique in a Config and is used as both the cluster name and
    the ClusterLoadAssignment name.
    """

    name: str
    protocol: UpstreamProtocol
    endpoints: tuple[Endpoint, ...]
    tls: UpstreamTls | None = None
    health_check: GrpcHealthCheck | None = None
    endpoint_source: EndpointSource | None = None
    load_balancer: LoadBalancer = LoadBalancer.ROUND_ROBIN
    _hash: int | None = field(default=None, init=False, repr=False, compare=False)

    __hash__ = _hashed_once(
        "name", "protocol", "endpoints", "tls", "health_check", "endpoint_source", "load_balancer"
    )


class PathMatchType(enum.StrEnum):
    EXACT = "Exact"
    # Kubernetes "Prefix": matches whole path elements, so /foo matches
    # /foo and /foo/bar but not /foobar.
    PREFIX = "Prefix"
    # A plain string prefix (ImplementationSpecific in an Ingress).
    STRING_PREFIX = "StringPrefix"
    # An RE2 regular expression over the whole path (a GRPCRoute method
    # match); translate/ has checked that RE2 accepts it.
    REGEX = "RegularExpression"


@dataclass(frozen=True, slots=True)
class PathMatch:
    type: PathMatchType
    value: str


# gRPC status codes Envoy can retry on, as its retry_on spells them.
GRPC_RETRY_CODES = frozenset(
    {"cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutePolicy:
    """How a forwarded call is timed and retried.

    Durations are whole milliseconds; 0 means "none". `retry_on` holds
    GRPC_RETRY_CODES names, sorted; `stream_idle_timeout_ms` None leaves the
    listener's stream idle timeout in force.

    `hash_header` (lowercase) is what a ring-hash backend hashes on.
    `grpc_only` True answers a request that is not gRPC (or gRPC-Web) with
    415 instead of forwarding it; None decides by the path (see
    `names_grpc_service`). `client_certificate_required` forwards only
    requests whose TLS connection presented a client certificate that was
    validated; any other request (plain HTTP included) is answered 403.
    """

    grpc_timeout_max_ms: int = 0
    stream_idle_timeout_ms: int | None = None
    retry_on: tuple[str, ...] = ("unavailable",)
    num_retries: int = 2
    hash_header: str | None = None
    grpc_only: bool | None = None
    client_certificate_required: bool = False


# A fully qualified gRPC service name whose last part is a type name, as
# protoc generates them ("/helloworld.Greeter/"); "/api.v1/" is not one.
_GRPC_SERVICE_PATH = re.compile(
    r"/(?:[A-Za-z_][A-Za-z0-9_]*\.)+[A-Z][A-Za-z0-9_]*(?:/[A-Za-z0-9_]*)?"
)


def names_grpc_service(path: PathMatch) -> bool:
    """True when the path match only matches calls of one gRPC service ("/pkg.Service/...")."""
    if path.type is PathMatchType.REGEX:
        return False
    return _GRPC_SERVICE_PATH.fullmatch(path.value) is not None


@dataclass(frozen=True, slots=True)
class Forward:
    """Send the request to a Backend (by name)."""

    backend: str
    policy: RoutePolicy = RoutePolicy()


@dataclass(frozen=True, slots=True)
class DirectResponse:
    """Answer without an upstream, e.g. a route whose Service is missing."""

    status: int
    body: str = ""


@dataclass(frozen=True, slots=True, order=True)
class WeightedBackend:
    backend: str  # a Backend name
    weight: int


@dataclass(frozen=True, slots=True)
class WeightedForward:
    """Split requests between Backends in proportion to their weights (all > 0)."""

    backends: tuple[WeightedBackend, ...]
    policy: RoutePolicy = RoutePolicy()


RouteAction = Forward | WeightedForward | DirectResponse


@dataclass(frozen=True, slots=True, order=True)
class HeaderMatch:
    """A request header the route requires: equal to `value`, or matching it as RE2.

    `name` is lowercase, as HTTP/2 carries it.
    """

    name: str
    value: str
    regex: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class HeaderMutation:
    """Request headers changed before forwarding; each tuple of (name, value) is in user order."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    path: PathMatch
    action: RouteAction
    origin: ObjectRef
    # Every header must match too (Gateway API routes; Ingress has none).
    headers: tuple[HeaderMatch, ...] = ()
    request_headers: HeaderMutation | None = None


@dataclass(frozen=True, slots=True)
class VirtualHost:
    name: str
    domains: tuple[str, ...]
    routes: tuple[Route, ...]
    _hash: int | None = field(default=None, init=False, repr=False, compare=False)

    __hash__ = _hashed_once("name", "domains", "routes")


@dataclass(frozen=True, slots=True)
class RouteConfig:
    name: str
    virtual_hosts: tuple[VirtualHost, ...]
    _hash: int | None = field(default=None, init=False, repr=False, compare=False)

    __hash__ = _hashed_once("name", "virtual_hosts")


@dataclass(frozen=True, slots=True, kw_only=True)
class DownstreamLimits:
    """How long a client connection lives, for every listener.

    A connection older than `max_connection_duration_s` is drained (GOAWAY),
    so long-lived clients reconnect and spread over the Envoy replicas; calls
    in flight on it go on. `drain_timeout_s` is the grace between the first
    GOAWAY and the last, for calls that raced it. 0: no maximum age, and
    Envoy's default drain grace (5 s).
    """

    max_connection_duration_s: int = 600
    drain_timeout_s: int = 10


@dataclass(frozen=True, slots=True)
class Listener:
    name: str
    address: str
    port: int
    route_config: str
    limits: DownstreamLimits = DownstreamLimits()


class TlsVersion(enum.StrEnum):
    TLS1_2 = "1.2"
    TLS1_3 = "1.3"


@dataclass(frozen=True, slots=True, repr=False)
class TlsCertificate:
    """A certificate chain and its key, as Envoy fetches it over SDS.

    `name` is "namespace/secretName" of the Kubernetes Secret, and the SDS
    resource name. Both PEM texts are normalised (re-encoded from what was
    parsed), so a Secret that only changes its formatting is the same value.
    `sans` are the DNS names the leaf certificate covers (lowercase,
    wildcards as "*.example.com"). The key takes part in equality, so a
    rotated key is a new value, but never in the repr: IR values end up in
    log lines and tracebacks.
    """

    name: str
    cert_chain_pem: str
    private_key_pem: str
    sans: tuple[str, ...]

    def __repr__(self) -> str:
        return (
            f"TlsCertificate(name={self.name!r}, sans={self.sans!r}, "
            f"cert_chain_pem=<{len(self.cert_chain_pem)} chars>, private_key_pem=[redacted])"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientValidation:
    """Client certificates checked at the TLS handshake against `ca`.

    `required` False still asks for one and refuses one that does not chain
    to `ca`, but lets a client without a certificate in.
    """

    ca: CaBundle
    required: bool = True


@dataclass(frozen=True, slots=True)
class TlsFilterChain:
    """The connections whose SNI is one of `server_names`, served with one certificate.

    One chain per certificate, not per host: every host the certificate
    serves shares the chain, its HTTP connection manager and `route_config`,
    so an HTTP/2 client may coalesce them onto one connection (RFC 7540
    section 9.1.1).
    """

    certificate: str  # a TlsCertificate name
    server_names: tuple[str, ...]
    route_config: str
    client_validation: ClientValidation | None = None


@dataclass(frozen=True, slots=True)
class HttpsListener:
    name: str
    address: str
    port: int
    filter_chains: tuple[TlsFilterChain, ...]
    min_tls_version: TlsVersion = TlsVersion.TLS1_2
    limits: DownstreamLimits = DownstreamLimits()


@dataclass(frozen=True, slots=True)
class Config:
    """Everything one node group of Envoys is given."""

    listeners: tuple[Listener, ...] = ()
    route_configs: tuple[RouteConfig, ...] = ()
    backends: tuple[Backend, ...] = ()
    https_listeners: tuple[HttpsListener, ...] = ()
    certificates: tuple[TlsCertificate, ...] = ()


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


@dataclass(frozen=True, slots=True, order=True)
class Condition:
    """A finding about one source object, in Kubernetes condition form."""

    object: ObjectRef
    type: str
    status: ConditionStatus
    reason: str
    message: str
    _hash: int | None = field(default=None, init=False, repr=False, compare=False)
    # Its condition_order, kept: an unchanged object's condition is the same
    # one at every translation, and all of them are sorted each time.
    _order: tuple[str, ...] | None = field(default=None, init=False, repr=False, compare=False)

    __hash__ = _hashed_once("object", "type", "status", "reason", "message")


def condition_order(condition: Condition) -> tuple[str, ...]:
    """Condition's own order as a flat key: the dataclass's compares build two
    tuples per comparison, and there is a condition per object."""
    found = condition._order
    if found is None:
        ref = condition.object
        found = (
            ref.kind,
            ref.namespace,
            ref.name,
            condition.type,
            condition.status,
            condition.reason,
            condition.message,
        )
        object.__setattr__(condition, "_order", found)
    return found


@dataclass(frozen=True, slots=True)
class Translation:
    config: Config
    # Sorted (condition_order), so consumers need not sort them again.
    conditions: tuple[Condition, ...] = ()
