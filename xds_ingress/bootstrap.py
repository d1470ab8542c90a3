"""The Envoy bootstrap that points an Envoy at this control plane.

Everything but the control plane's own cluster arrives over one ADS stream
(incremental by default), so the bootstrap is small and the same for every
Envoy of a node cluster apart from its node id.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from typing import Any

import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import config_source_pb2, grpc_service_pb2, protocol_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as upstream_http_pb2
from google.protobuf import wrappers_pb2

from xds_ingress.resources.cluster import UPSTREAM_HTTP_PROTOCOL_OPTIONS
from xds_ingress.resources.core import (
    ads_config_source,
    bootstrap_shell,
    parse_host_port,
    seconds,
    socket_address,
    to_document,
    typed,
)

XDS_CLUSTER = "xds_cluster"

# The xDS server accepts messages this large (server/grpc_server.py,
# MAX_MESSAGE_BYTES); the snapshot of a big cluster exceeds gRPC's 4 MiB.
MAX_XDS_MESSAGE_BYTES = 64 * 1024 * 1024
# Pings find a control plane that vanished without closing the connection
# (a node lost, a partition) within ~20 s, so Envoy reconnects elsewhere. Our
# xDS server permits pings every 5 s; a stock gRPC server only every 5 min.
_KEEPALIVE_INTERVAL_SECONDS = 15
_KEEPALIVE_TIMEOUT_SECONDS = 5
_CONNECT_TIMEOUT_SECONDS = 1


def render_bootstrap(
    *,
    xds_address: str,
    node_id: str,
    node_cluster: str,
    admin_address: str | None = "127.0.0.1:9901",
    delta: bool = True,
) -> dict[str, Any]:
    """A JSON-able Envoy bootstrap; `xds_address` and `admin_address` are HOST:PORT.

    Raises ValueError when an address is not HOST:PORT.
    """
    bootstrap = bootstrap_shell(
        node_id=node_id, node_cluster=node_cluster, admin_address=admin_address
    )
    api_type = (
        config_source_pb2.ApiConfigSource.DELTA_GRPC
        if delta
        else config_source_pb2.ApiConfigSource.GRPC
    )
    bootstrap.dynamic_resources.CopyFrom(
        bootstrap_pb2.Bootstrap.DynamicResources(
            ads_config=config_source_pb2.ApiConfigSource(
                api_type=api_type,
                transport_api_version=config_source_pb2.V3,
                grpc_services=[
                    grpc_service_pb2.GrpcService(
                        envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(
                            cluster_name=XDS_CLUSTER,
                            max_receive_message_length=wrappers_pb2.UInt32Value(
                                value=MAX_XDS_MESSAGE_BYTES
                            ),
                        )
                    )
                ],
                # The node is the same on every request; say it once per stream.
                set_node_on_first_message_only=True,
            ),
            lds_config=ads_config_source(),
            cds_config=ads_config_source(),
        )
    )
    bootstrap.static_resources.clusters.append(_xds_cluster(xds_address))
    return to_document(bootstrap)


def _xds_cluster(xds_address: str) -> cluster_pb2.Cluster:
    host, port = parse_host_port(xds_address)
    return cluster_pb2.Cluster(
        name=XDS_CLUSTER,
        # A Kubernetes Service name needs resolving; an IP literal does not.
        type=cluster_pb2.Cluster.STATIC if _is_ip(host) else cluster_pb2.Cluster.STRICT_DNS,
        connect_timeout=seconds(_CONNECT_TIMEOUT_SECONDS),
        load_assignment=endpoint_pb2.ClusterLoadAssignment(
            cluster_name=XDS_CLUSTER,
            endpoints=[
                endpoint_components_pb2.LocalityLbEndpoints(
                    lb_endpoints=[
                        endpoint_components_pb2.LbEndpoint(
                            endpoint=endpoint_components_pb2.Endpoint(
                                address=socket_address(host, port)
                            )
                        )
                    ]
                )
            ],
        ),
        typed_extension_protocol_options={
            # gRPC needs HTTP/2; the control plane speaks it without TLS.
            UPSTREAM_HTTP_PROTOCOL_OPTIONS: typed(
                upstream_http_pb2.HttpProtocolOptions(
                    explicit_http_config=upstream_http_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                        http2_protocol_options=protocol_pb2.Http2ProtocolOptions(
                            connection_keepalive=protocol_pb2.KeepaliveSettings(
                                interval=seconds(_KEEPALIVE_INTERVAL_SECONDS),
                                timeout=seconds(_KEEPALIVE_TIMEOUT_SECONDS),
                            )
                        )
                    )
                )
            )
        },
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def to_yaml(document: Mapping[str, Any], *, comment: str = "") -> str:
    """YAML for a bootstrap file, with `comment` as a leading `#` block."""
    header = "".join(f"# {line}".rstrip() + "\n" for line in comment.splitlines())
    return header + yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=False)


def to_json(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"
