"""The HTTP filters of every connection manager, in the order they run.

One explicit list, router last (filters after the router never see a
request). gRPC-Web comes first, so everything after it, the statistics
included, sees the plain gRPC call a browser's gRPC-Web request becomes.
The filters are the same for every listener and never depend on routes:
a listener that changes drains its connections.
"""

from __future__ import annotations

from envoy.extensions.filters.http.grpc_stats.v3 import config_pb2 as grpc_stats_pb2
from envoy.extensions.filters.http.grpc_web.v3 import grpc_web_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import wrappers_pb2

from xds_ingress.resources.core import typed

GRPC_WEB = "envoy.filters.http.grpc_web"
GRPC_STATS = "envoy.filters.http.grpc_stats"
ROUTER = "envoy.filters.http.router"


def http_filters() -> list[hcm_pb2.HttpFilter]:
    return [
        # Translates gRPC-Web (browsers) to gRPC and the answers back;
        # requests that are not gRPC-Web pass through untouched.
        hcm_pb2.HttpFilter(name=GRPC_WEB, typed_config=typed(grpc_web_pb2.GrpcWeb())),
        hcm_pb2.HttpFilter(name=GRPC_STATS, typed_config=typed(_grpc_stats())),
        hcm_pb2.HttpFilter(
            name=ROUTER,
            # Per-call cost measured in bench/README.md (data plane): the
            # x-envoy-* headers and dynamic per-cluster stats cost ~12 us a
            # call together with request ids, and gRPC clients use neither.
            typed_config=typed(
                router_pb2.Router(
                    suppress_envoy_headers=True,
                    dynamic_stats=wrappers_pb2.BoolValue(value=False),
                )
            ),
        ),
    ]


def _grpc_stats() -> grpc_stats_pb2.FilterConfig:
    return grpc_stats_pb2.FilterConfig(
        # Per cluster (cluster.<name>.grpc.{success,failure,total,...}), not
        # per method. Per method, Envoy makes stats for any method name a
        # client sends, so made-up names would grow its memory without
        # bound. An allowlist of the routed methods would bound that, but
        # this config sits in every listener: a route change would then
        # change the listener and drain every client connection. The number
        # of clusters is bounded by the Services routed to, which users
        # control, and a cluster usually serves one gRPC service anyway.
        stats_for_all_methods=wrappers_pb2.BoolValue(value=False),
        # Message counts for streams, readable by access logs.
        emit_filter_state=True,
    )
