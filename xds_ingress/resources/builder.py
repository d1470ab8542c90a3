"""ir.Config → every Envoy resource, by xDS type URL, reusing unchanged parts.

The IR is frozen and hashable, so a resource is memoised on the IR value it
comes from: an unchanged Ingress costs a dictionary lookup, not a protobuf
build, and yields the very same message object as last time. Messages are
shared between builds: callers must treat them as read-only. Route
configurations come as their bytes (resources/encoded.py), joined from
their virtual hosts' cached pieces.
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any

from google.protobuf.message import Message

from xds_ingress import gc_pause, ir
from xds_ingress.resources import types
from xds_ingress.resources.cluster import build_cluster
from xds_ingress.resources.encoded import Encoded
from xds_ingress.resources.endpoint import build_load_assignment
from xds_ingress.resources.extension_config import (
    GRPC_STATS,
    GrpcMethod,
    build_grpc_stats_extension,
    virtual_host_methods,
)
from xds_ingress.resources.listener import build_https_listener, build_listener
from xds_ingress.resources.memo import Memo
from xds_ingress.resources.route import encode_route_configuration, virtual_host_piece
from xds_ingress.resources.secret import build_ca_secret, build_secret, ca_bundles

# Route configurations are Encoded (see encoded.py); everything else is a message.
Resources = dict[str, dict[str, Message | Encoded[Message]]]
# A Backend, its cluster and its load assignment.
_BuiltBackend = tuple[ir.Backend, Message, Message]
# A virtual host, its piece of the route configuration, its routed gRPC methods.
_BuiltHost = tuple[ir.VirtualHost, bytes, frozenset[GrpcMethod]]
# A route configuration as built: the IR, its bytes, the routed gRPC methods
# of all its hosts, and its hosts by name (so a changed one is a join).
_BuiltRoutes = tuple[ir.RouteConfig, Encoded[Message], frozenset[GrpcMethod], dict[str, _BuiltHost]]


class DuplicateNameError(ValueError):
    """Two IR values claim one resource name: a translation bug, not a user error."""


class ResourceBuilder:
    """Builds `{type_url: {name: message}}`; keep one per node group for memoisation.

    Not thread-safe: one pipeline owns it.
    """

    def __init__(self) -> None:
        self._listeners: Memo[ir.Listener, Message] = Memo()
        self._https_listeners: Memo[ir.HttpsListener, Message] = Memo()
        self._secrets: Memo[ir.TlsCertificate, Message] = Memo()
        self._ca_secrets: Memo[ir.CaBundle, Message] = Memo()
        # By name, the route config each last build made, and what from: a
        # route config changes with any of its hosts, so hashing one (every
        # host) to find it in a memo cost more than comparing it with the last.
        self._route_configs: dict[str, _BuiltRoutes] = {}
        self._virtual_hosts: Memo[ir.VirtualHost, bytes] = Memo()
        self._virtual_host_methods: Memo[ir.VirtualHost, frozenset[GrpcMethod]] = Memo()
        # Keyed by the backend with its endpoints left out: EndpointSlice churn
        # (the common change) must not rebuild, or re-version, the cluster.
        self._clusters: Memo[ir.Backend, Message] = Memo(key=_without_endpoints)
        # By name, what the last build made of each Backend (see _add_backends).
        self._backends_built: dict[str, _BuiltBackend] = {}
        self._load_assignments: Memo[ir.Backend, Message] = Memo()
        # The grpc_stats config of every route config's gRPC methods: a route
        # change that names no new method rebuilds nothing.
        self._grpc_stats: Memo[frozenset[GrpcMethod], Message] = Memo()
        self._memos: tuple[Memo[Any, Any], ...] = (
            self._listeners,
            self._https_listeners,
            self._secrets,
            self._ca_secrets,
            self._virtual_hosts,
            self._virtual_host_methods,
            self._clusters,
            self._load_assignments,
            self._grpc_stats,
        )

    def build(self, config: ir.Config) -> Resources:
        # Building makes protobufs and memo entries, no garbage cycles; at
        # 10k Services the collector's passes were 60% of a cold build.
        with gc_pause.paused():
            return self._build(config)

    def _build(self, config: ir.Config) -> Resources:
        resources: Resources = {type_url: {} for type_url in types.ADS_ORDER}
        for listener in config.listeners:
            message = self._listeners.get(listener, build_listener)
            _add(resources, types.LISTENER, listener.name, message)
        for https_listener in config.https_listeners:
            message = self._https_listeners.get(https_listener, build_https_listener)
            _add(resources, types.LISTENER, https_listener.name, message)
        for certificate in config.certificates:
            message = self._secrets.get(certificate, build_secret)
            _add(resources, types.SECRET, certificate.name, message)
        # The CAs that client certificates (mTLS) and GRPCS backends are checked against.
        for bundle in ca_bundles(config):
            message = self._ca_secrets.get(bundle, build_ca_secret)
            _add(resources, types.SECRET, bundle.name, message)
        methods: set[GrpcMethod] = set()
        route_configs: dict[str, _BuiltRoutes] = {}
        for route_config in config.route_configs:
            built = self._route_configs.get(route_config.name)
            # Equal tuples of hosts compare by identity first: an unchanged
            # route config is found without looking into its hosts.
            if built is None or built[0] != route_config:
                built = self._build_route_configuration(route_config, built)
            route_configs[route_config.name] = built
            _add(resources, types.ROUTE, route_config.name, built[1])
            methods |= built[2]
        self._route_configs = route_configs
        if _has_connection_manager(config):
            message = self._grpc_stats.get(frozenset(methods), build_grpc_stats_extension)
            _add(resources, types.EXTENSION_CONFIG, GRPC_STATS, message)
        self._add_backends(resources, config.backends)
        for memo in self._memos:
            memo.rotate()
        return resources

    def _add_backends(self, resources: Resources, backends: tuple[ir.Backend, ...]) -> None:
        """Each Backend's cluster and load assignment.

        Found by name first: a Backend the translation hands over as the
        very same object costs a few dictionary operations, not two memo
        lookups (at 3000 Ingresses those were a third of a build after a
        one-Ingress change).
        """
        clusters = resources[types.CLUSTER]
        assignments = resources[types.ENDPOINT]
        previous = self._backends_built
        current: dict[str, _BuiltBackend] = {}
        for backend in backends:
            name = backend.name
            if name in current:
                raise _duplicate(types.CLUSTER, name)
            built = previous.get(name)
            if built is None or built[0] is not backend:
                built = self._built_backend(backend, built)
            current[name] = built
            clusters[name] = built[1]
            assignments[name] = built[2]
        self._backends_built = current

    def _built_backend(self, backend: ir.Backend, before: _BuiltBackend | None) -> _BuiltBackend:
        if before is not None and before[0] == backend:
            return backend, before[1], before[2]
        # build_cluster reads no endpoints: EndpointSlice churn (the common
        # change) must not rebuild, or re-version, the cluster.
        if before is not None and _without_endpoints(before[0]) == _without_endpoints(backend):
            cluster = before[1]
        else:
            cluster = self._clusters.get(backend, build_cluster)
        return backend, cluster, self._load_assignments.get(backend, build_load_assignment)

    def _build_route_configuration(
        self, route_config: ir.RouteConfig, before: _BuiltRoutes | None
    ) -> _BuiltRoutes:
        """A route config joined from its hosts' pieces, encoding only the changed hosts.

        Its hosts' pieces are kept by name (and the IR they came from) for
        as long as the route config is: the day one host changes, the
        others are found with a dictionary lookup and an identity check,
        not a memo lookup each (at 3000 hosts, a tenth of a rebuild).
        """
        hosts_before = before[3] if before is not None else {}
        now: dict[str, _BuiltHost] = {}
        pieces: list[bytes] = []
        methods: list[frozenset[GrpcMethod]] = []
        for vhost in route_config.virtual_hosts:
            built = hosts_before.get(vhost.name)
            if built is None or built[0] is not vhost:
                built = (
                    vhost,
                    self._virtual_hosts.get(vhost, virtual_host_piece),
                    self._virtual_host_methods.get(vhost, virtual_host_methods),
                )
            now[vhost.name] = built
            pieces.append(built[1])
            if built[2]:
                methods.append(built[2])
        encoded = encode_route_configuration(route_config, virtual_host_pieces=pieces)
        return route_config, encoded, frozenset[GrpcMethod]().union(*methods), now


# Every Backend field but its endpoints, as one tuple (in C).
_without_endpoints = operator.attrgetter(
    *(
        each.name
        for each in dataclasses.fields(ir.Backend)
        if each.compare and each.name != "endpoints"
    )
)


def _has_connection_manager(config: ir.Config) -> bool:
    # Only what some listener names is served (see cache.consistency_errors).
    return bool(config.listeners) or any(
        listener.filter_chains for listener in config.https_listeners
    )


def _add(
    resources: Resources, type_url: str, name: str, message: Message | Encoded[Message]
) -> None:
    by_name = resources[type_url]
    if name in by_name:
        raise _duplicate(type_url, name)
    by_name[name] = message


def _duplicate(type_url: str, name: str) -> DuplicateNameError:
    kind = type_url.rsplit(".", 1)[-1]
    return DuplicateNameError(f"two {kind} resources are named {name!r}")
