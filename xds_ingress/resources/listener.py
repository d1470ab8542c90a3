"""ir.Listener → envoy.config.listener.v3.Listener: a plain-text HTTP listener.

One filter chain with an HttpConnectionManager that takes its routes over
RDS (on the ADS stream), so a route change never touches the listener and
never drains its connections.
"""

from __future__ import annotations

from envoy.config.core.v3 import protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from google.protobuf import wrappers_pb2

from xds_ingress import ir
from xds_ingress.resources.core import ads_config_source, seconds, socket_address, typed

HTTP_CONNECTION_MANAGER = "envoy.filters.network.http_connection_manager"
ROUTER = "envoy.filters.http.router"

# gRPC clients queue calls beyond a connection's stream limit instead of
# opening another connection, so Envoy's edge advice of 100 would stall a
# client holding many long-lived streams; this still bounds one connection.
_MAX_CONCURRENT_STREAMS = 1024
# Envoy's default windows (256 MiB) let one client park that much in the
# proxy; the edge advice (64 KiB) caps a gRPC stream at 64 KiB per round
# trip, which starves streaming over any real latency.
_STREAM_WINDOW_BYTES = 1024 * 1024
_CONNECTION_WINDOW_BYTES = 16 * 1024 * 1024
# Idle means no frames at all, so a long-lived gRPC stream that carries
# messages now and then is not cut; a stream silent for 5 minutes is.
_STREAM_IDLE_SECONDS = 300
_CONNECTION_IDLE_SECONDS = 3600


def build_listener(listener: ir.Listener) -> listener_pb2.Listener:
    return listener_pb2.Listener(
        name=listener.name,
        address=socket_address(listener.address, listener.port),
        filter_chains=[
            listener_components_pb2.FilterChain(
                filters=[
                    listener_components_pb2.Filter(
                        name=HTTP_CONNECTION_MANAGER,
                        typed_config=typed(_connection_manager(listener)),
                    )
                ]
            )
        ],
    )


def _connection_manager(listener: ir.Listener) -> hcm_pb2.HttpConnectionManager:
    return hcm_pb2.HttpConnectionManager(
        # AUTO serves HTTP/1.1 and, on this plain port, HTTP/2 with prior
        # knowledge (h2c), which is how gRPC clients speak without TLS.
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        stat_prefix=listener.name,
        rds=hcm_pb2.Rds(config_source=ads_config_source(), route_config_name=listener.route_config),
        # The router must be last: filters after it never see the request.
        http_filters=[hcm_pb2.HttpFilter(name=ROUTER, typed_config=typed(router_pb2.Router()))],
        # Clients send "host:port" authorities; routes name hosts only.
        strip_any_host_port=True,
        # Envoy is the edge: trust the peer address, not a client's X-Forwarded-For.
        use_remote_address=wrappers_pb2.BoolValue(value=True),
        stream_idle_timeout=seconds(_STREAM_IDLE_SECONDS),
        common_http_protocol_options=protocol_pb2.HttpProtocolOptions(
            idle_timeout=seconds(_CONNECTION_IDLE_SECONDS)
        ),
        http2_protocol_options=protocol_pb2.Http2ProtocolOptions(
            max_concurrent_streams=wrappers_pb2.UInt32Value(value=_MAX_CONCURRENT_STREAMS),
            initial_stream_window_size=wrappers_pb2.UInt32Value(value=_STREAM_WINDOW_BYTES),
            initial_connection_window_size=wrappers_pb2.UInt32Value(value=_CONNECTION_WINDOW_BYTES),
        ),
    )
