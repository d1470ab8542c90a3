"""A built resource set as one static Envoy bootstrap, with no control plane.

Route configurations are inlined into their listeners and endpoints into
their clusters, and SDS secrets become static secrets that the listeners
name, so `envoy -c` loads exactly what xDS would have sent (and the keys
still stay out of the listeners). Tests
validate resources this way (`envoy --mode validate`), and benchmarks use it
as the yardstick of Envoy reading the same configuration from a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import tls_pb2
from google.protobuf.message import Message

from xds_ingress.resources import types
from xds_ingress.resources.core import bootstrap_shell, to_document, typed
from xds_ingress.resources.encoded import Encoded, message_of

_HCM_TYPE_URL = "type.googleapis.com/" + hcm_pb2.HttpConnectionManager.DESCRIPTOR.full_name
_DOWNSTREAM_TLS_TYPE_URL = (
    "type.googleapis.com/" + tls_pb2.DownstreamTlsContext.DESCRIPTOR.full_name
)


def render_static_bootstrap(
    resources: Mapping[str, Mapping[str, Message | Encoded[Message]]],
    *,
    node_id: str,
    node_cluster: str,
    admin_address: str | None = "127.0.0.1:9901",
) -> dict[str, Any]:
    """A JSON-able bootstrap; raises KeyError when a named RDS/EDS/ECDS resource is missing."""
    routes = resources.get(types.ROUTE, {})
    assignments = resources.get(types.ENDPOINT, {})
    extensions = resources.get(types.EXTENSION_CONFIG, {})
    bootstrap = bootstrap_shell(
        node_id=node_id, node_cluster=node_cluster, admin_address=admin_address
    )
    static = bootstrap.static_resources
    for name in sorted(listeners := resources.get(types.LISTENER, {})):
        static.listeners.append(_with_inline_routes(listeners[name], routes, extensions))
    for name in sorted(clusters := resources.get(types.CLUSTER, {})):
        static.clusters.append(_with_inline_endpoints(clusters[name], assignments))
    for name in sorted(secrets := resources.get(types.SECRET, {})):
        static.secrets.append(secrets[name])
    return to_document(bootstrap)


def _with_inline_routes(
    listener: listener_pb2.Listener,
    routes: Mapping[str, Message | Encoded[Message]],
    extensions: Mapping[str, Message | Encoded[Message]],
) -> listener_pb2.Listener:
    # A copy: the builder shares its messages between builds.
    inlined = listener_pb2.Listener()
    inlined.CopyFrom(listener)
    chains = [*inlined.filter_chains]
    if inlined.HasField("default_filter_chain"):
        chains.append(inlined.default_filter_chain)
    for chain in chains:
        _use_static_secrets(chain)
        for network_filter in chain.filters:
            if network_filter.typed_config.type_url != _HCM_TYPE_URL:
                continue
            hcm = hcm_pb2.HttpConnectionManager()
            network_filter.typed_config.Unpack(hcm)
            if hcm.HasField("rds"):
                # route_config shares a oneof with rds, so this also clears rds.
                hcm.route_config.CopyFrom(message_of(routes[hcm.rds.route_config_name]))
            _inline_extension_configs(hcm, extensions)
            network_filter.typed_config.CopyFrom(typed(hcm))
    return inlined


def _inline_extension_configs(
    hcm: hcm_pb2.HttpConnectionManager, extensions: Mapping[str, Message]
) -> None:
    """Put each ECDS filter's config in the filter, as xDS would have delivered it."""
    for http_filter in hcm.http_filters:
        if not http_filter.HasField("config_discovery"):
            continue
        extension: Any = extensions[http_filter.name]
        # typed_config shares a oneof with config_discovery, so this also clears it.
        http_filter.typed_config.CopyFrom(extension.typed_config)


def _use_static_secrets(chain: listener_components_pb2.FilterChain) -> None:
    """Point the chain's SDS references at static_resources.secrets (no sds_config)."""
    socket = chain.transport_socket
    if socket.typed_config.type_url != _DOWNSTREAM_TLS_TYPE_URL:
        return
    context = tls_pb2.DownstreamTlsContext()
    socket.typed_config.Unpack(context)
    for secret_config in context.common_tls_context.tls_certificate_sds_secret_configs:
        secret_config.ClearField("sds_config")
    socket.typed_config.CopyFrom(typed(context))


def _with_inline_endpoints(
    cluster: cluster_pb2.Cluster, assignments: Mapping[str, Message]
) -> cluster_pb2.Cluster:
    if cluster.type != cluster_pb2.Cluster.EDS:
        return cluster
    inlined = cluster_pb2.Cluster()
    inlined.CopyFrom(cluster)
    service_name = inlined.eds_cluster_config.service_name or inlined.name
    inlined.ClearField("eds_cluster_config")
    inlined.type = cluster_pb2.Cluster.STATIC
    inlined.load_assignment.CopyFrom(assignments[service_name])
    return inlined
