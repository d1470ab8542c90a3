"""The HTTP filters of every connection manager, in the order they run.

One explicit list, router last (filters after the router never see a
request). gRPC-Web comes first, so everything after it, the statistics
included, sees the plain gRPC call a browser's gRPC-Web request becomes.
The filters are the same for every listener and never depend on routes:
a listener that changes drains its connections. What does depend on routes
(the grpc_stats method allowlist) is fetched over ECDS instead, see
extension_config.py.
"""

from __future__ import annotations

from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.filters.http.grpc_web.v3 import grpc_web_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import wrappers_pb2

from xds_ingress.resources.core import ads_config_source, typed
from xds_ingress.resources.extension_config import (
    GRPC_STATS,
    GRPC_STATS_TYPE_URL,
    grpc_stats_config,
)

GRPC_WEB = "envoy.filters.http.grpc_web"
ROUTER = "envoy.filters.http.router"


def http_filters() -> list[hcm_pb2.HttpFilter]:
    return [
        # Translates gRPC-Web (browsers) to gRPC and the answers back;
        # requests that are not gRPC-Web pass through untouched.
        hcm_pb2.HttpFilter(name=GRPC_WEB, typed_config=typed(grpc_web_pb2.GrpcWeb())),
        # Named, not inlined: its config lives in the ECDS resource of this name.
        hcm_pb2.HttpFilter(name=GRPC_STATS, config_discovery=_grpc_stats_discovery()),
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


def _grpc_stats_discovery() -> config_source_pb2.ExtensionConfigSource:
    return config_source_pb2.ExtensionConfigSource(
        # On the ADS stream, so it is ordered with the listeners naming it.
        config_source=ads_config_source(),
        # Per-cluster stats only. Without a default, a filter whose config
        # never arrived (or was rejected) answers every request 500.
        default_config=typed(grpc_stats_config(())),
        # A new listener warms until the allowlist arrives (one round trip on
        # the same stream; a listener created later reuses the subscription
        # and its config), so calls are never counted under the fallback.
        # Should it not arrive, Envoy applies the default when the initial
        # fetch times out.
        apply_default_config_without_warming=False,
        type_urls=[GRPC_STATS_TYPE_URL],
    )
