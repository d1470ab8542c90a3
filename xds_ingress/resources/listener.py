"""ir.Listener / ir.HttpsListener → envoy.config.listener.v3.Listener.

The plain listener has one filter chain with an HttpConnectionManager that
takes its routes over RDS (on the ADS stream), so a route change never
touches the listener and never drains its connections.

The HTTPS listener reads the SNI (tls_inspector) and picks the filter chain
of the certificate that serves that name; each chain terminates TLS with its
certificate, fetched over SDS by name, so the key is never in the listener
and a rotation never drains a connection. There is no default chain: a
client naming a host no certificate serves (or no host) is refused at the
handshake, rather than shown a certificate for some other host.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2, protocol_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from google.protobuf import wrappers_pb2

from xds_ingress import ir
from xds_ingress.resources.core import ads_config_source, seconds, socket_address, typed
from xds_ingress.resources.http_filters import http_filters
from xds_ingress.resources.secret import sds_secret_config

HTTP_CONNECTION_MANAGER = "envoy.filters.network.http_connection_manager"
TLS_INSPECTOR = "envoy.filters.listener.tls_inspector"
TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"
# Always both: gRPC needs h2, and a client that offers only http/1.1 must
# still get an answer (an HTTP/1.1 client gets a proper error, not a reset).
ALPN_PROTOCOLS = ("h2", "http/1.1")
_TLS_VERSIONS = {
    ir.TlsVersion.TLS1_2: common_pb2.TlsParameters.TLSv1_2,
    ir.TlsVersion.TLS1_3: common_pb2.TlsParameters.TLSv1_3,
}

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
                    _connection_manager_filter(
                        stat_prefix=listener.name,
                        route_config=listener.route_config,
                        limits=listener.limits,
                    )
                ]
            )
        ],
    )


def build_https_listener(listener: ir.HttpsListener) -> listener_pb2.Listener:
    return listener_pb2.Listener(
        name=listener.name,
        address=socket_address(listener.address, listener.port),
        listener_filters=[
            listener_components_pb2.ListenerFilter(
                name=TLS_INSPECTOR, typed_config=typed(tls_inspector_pb2.TlsInspector())
            )
        ],
        filter_chains=[
            listener_components_pb2.FilterChain(
                # Named, so that Envoy's stats and config dumps say which
                # certificate a connection was served with.
                name=_chain_name(chain),
                filter_chain_match=listener_components_pb2.FilterChainMatch(
                    server_names=chain.server_names
                ),
                transport_socket=base_pb2.TransportSocket(
                    name=TLS_TRANSPORT_SOCKET,
                    typed_config=typed(
                        _downstream_tls_context(chain, min_version=listener.min_tls_version)
                    ),
                ),
                filters=[
                    _connection_manager_filter(
                        stat_prefix=listener.name,
                        route_config=chain.route_config,
                        limits=listener.limits,
                    )
                ],
            )
            for chain in listener.filter_chains
        ],
    )


def _downstream_tls_context(
    chain: ir.TlsFilterChain, *, min_version: ir.TlsVersion
) -> tls_pb2.DownstreamTlsContext:
    context = tls_pb2.DownstreamTlsContext(
        common_tls_context=tls_pb2.CommonTlsContext(
            tls_params=common_pb2.TlsParameters(
                tls_minimum_protocol_version=_TLS_VERSIONS[min_version]
            ),
            tls_certificate_sds_secret_configs=[sds_secret_config(chain.certificate)],
            alpn_protocols=ALPN_PROTOCOLS,
        )
    )
    validation = chain.client_validation
    if validation is not None:
        # The CA comes over SDS like the certificate, so rotating it touches
        # no listener. Optional still refuses a certificate that does not
        # chain to the CA; it only lets a client without one in.
        context.common_tls_context.validation_context_sds_secret_config.CopyFrom(
            sds_secret_config(validation.ca.name)
        )
        context.require_client_certificate.value = validation.required
    return context


def _chain_name(chain: ir.TlsFilterChain) -> str:
    # Unique per listener: a certificate split by client validation has
    # several chains, each with a route config of its own.
    return chain.certificate if chain.client_validation is None else chain.route_config


def _connection_manager_filter(
    *, stat_prefix: str, route_config: str, limits: ir.DownstreamLimits
) -> listener_components_pb2.Filter:
    return listener_components_pb2.Filter(
        name=HTTP_CONNECTION_MANAGER,
        typed_config=typed(
            _connection_manager(stat_prefix=stat_prefix, route_config=route_config, limits=limits)
        ),
    )


def _connection_manager(
    *, stat_prefix: str, route_config: str, limits: ir.DownstreamLimits
) -> hcm_pb2.HttpConnectionManager:
    common = protocol_pb2.HttpProtocolOptions(idle_timeout=seconds(_CONNECTION_IDLE_SECONDS))
    if limits.max_connection_duration_s:
        # Then Envoy drains the connection (GOAWAY): the client opens a new
        # one, which the layer-4 balancer in front may give another Envoy
        # replica. Calls in flight on the old connection go on.
        common.max_connection_duration.CopyFrom(seconds(limits.max_connection_duration_s))
    manager = hcm_pb2.HttpConnectionManager(
        # AUTO serves HTTP/1.1 and HTTP/2: over TLS as ALPN chose, and on the
        # plain port with prior knowledge (h2c), which is how gRPC clients
        # speak without TLS.
        codec_type=hcm_pb2.HttpConnectionManager.AUTO,
        stat_prefix=stat_prefix,
        rds=hcm_pb2.Rds(config_source=ads_config_source(), route_config_name=route_config),
        http_filters=http_filters(),
        # Clients send "host:port" authorities; routes name hosts only.
        strip_any_host_port=True,
        # Envoy is the edge: trust the peer address, not a client's X-Forwarded-For.
        use_remote_address=wrappers_pb2.BoolValue(value=True),
        # No tracing yet, so an x-request-id per call is pure cost.
        generate_request_id=wrappers_pb2.BoolValue(value=False),
        stream_idle_timeout=seconds(_STREAM_IDLE_SECONDS),
        common_http_protocol_options=common,
        http2_protocol_options=protocol_pb2.Http2ProtocolOptions(
            max_concurrent_streams=wrappers_pb2.UInt32Value(value=_MAX_CONCURRENT_STREAMS),
            initial_stream_window_size=wrappers_pb2.UInt32Value(value=_STREAM_WINDOW_BYTES),
            initial_connection_window_size=wrappers_pb2.UInt32Value(value=_CONNECTION_WINDOW_BYTES),
        ),
    )
    if limits.drain_timeout_s:
        manager.drain_timeout.CopyFrom(seconds(limits.drain_timeout_s))
    return manager
