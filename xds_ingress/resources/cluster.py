"""ir.Backend → envoy.config.cluster.v3.Cluster: an EDS cluster per Service port.

The cluster says how to talk to the backend; its endpoints come separately
over EDS (see endpoint.py), so a pod coming or going changes only the
ClusterLoadAssignment and never re-warms the cluster.
"""

from __future__ import annotations

from typing import assert_never

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import protocol_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as upstream_http_pb2

from xds_ingress import ir
from xds_ingress.resources.core import ads_config_source, seconds, typed

UPSTREAM_HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

_CONNECT_TIMEOUT_SECONDS = 2


def build_cluster(backend: ir.Backend) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=backend.name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=ads_config_source(), service_name=backend.name
        ),
        connect_timeout=seconds(_CONNECT_TIMEOUT_SECONDS),
        lb_policy=cluster_pb2.Cluster.ROUND_ROBIN,
    )
    cluster.typed_extension_protocol_options[UPSTREAM_HTTP_PROTOCOL_OPTIONS].CopyFrom(
        typed(upstream_protocol_options(backend.protocol))
    )
    return cluster


def upstream_protocol_options(
    protocol: ir.UpstreamProtocol,
) -> upstream_http_pb2.HttpProtocolOptions:
    """Speak the backend's protocol explicitly, never the client's.

    Envoy multiplexes many client calls onto a few HTTP/2 connections per
    backend; that only happens when h2c is stated here. No HTTP/2 keepalive:
    grpc-go servers answer pings sent more often than every 5 minutes with
    GOAWAY "too_many_pings".
    """
    match protocol:
        case ir.UpstreamProtocol.H2C:
            explicit = upstream_http_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions()
            )
        case ir.UpstreamProtocol.HTTP1:
            explicit = upstream_http_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                http_protocol_options=protocol_pb2.Http1ProtocolOptions()
            )
        case _:
            assert_never(protocol)
    return upstream_http_pb2.HttpProtocolOptions(explicit_http_config=explicit)
