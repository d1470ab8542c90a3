"""ir.Backend → envoy.config.cluster.v3.Cluster: an EDS cluster per Service port.

The cluster says how to talk to the backend; its endpoints come separately
over EDS (see endpoint.py), so a pod coming or going changes only the
ClusterLoadAssignment and never re-warms the cluster.

Every cluster is sized for a gateway: one Envoy carries the calls of many
clients to few backends, so Envoy's defaults (1024 connections, requests
and pending requests per cluster) would fail calls under ordinary load.
"""

from __future__ import annotations

import functools
from typing import assert_never

from envoy.config.cluster.v3 import circuit_breaker_pb2, cluster_pb2, outlier_detection_pb2
from envoy.config.core.v3 import base_pb2, health_check_pb2, protocol_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as upstream_http_pb2
from envoy.type.matcher.v3 import string_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import duration_pb2, wrappers_pb2

from xds_ingress import ir
from xds_ingress.resources.core import ads_config_source, seconds, typed
from xds_ingress.resources.secret import sds_secret_config

UPSTREAM_HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
TLS_TRANSPORT_SOCKET = "envoy.transport_sockets.tls"

_CONNECT_TIMEOUT_SECONDS = 2

# HTTP/2 to the backend: up to this many calls share one connection before
# Envoy opens another (the backend's own SETTINGS may lower it), so thousands
# of client connections become a couple of upstream ones per endpoint.
UPSTREAM_MAX_CONCURRENT_STREAMS = 1024
# As on the listener: large enough for streaming over real latency, small
# enough that one slow backend cannot park hundreds of MiB in Envoy.
_UPSTREAM_STREAM_WINDOW_BYTES = 1024 * 1024
_UPSTREAM_CONNECTION_WINDOW_BYTES = 16 * 1024 * 1024

# Circuit breakers: concurrent calls (long-lived gRPC streams count, each for
# its whole life), calls waiting for a connection, and connections.
MAX_REQUESTS = 100_000
# Over HTTP/2 a call waits for a connection only while one is being opened,
# and a burst on a cold pool (Envoy or the backend just started, clients
# reconnecting) waits whole: 5000 clients with 10 calls each put 52k calls
# in the queue at once, and a 10k limit failed 21k of them with UNAVAILABLE
# ("reset reason: overflow"; bench/README.md, coalescing). As many calls may
# wait as may be in flight.
MAX_PENDING_REQUESTS = MAX_REQUESTS
MAX_CONNECTIONS = 10_000
# Retries may add at most this share of the calls in flight, so retries
# cannot multiply the load on a backend that is already failing; the floor
# lets a quiet cluster still retry a few calls.
RETRY_BUDGET_PERCENT = 20.0
RETRY_MIN_CONCURRENCY = 3

# Outlier detection. gRPC statuses reach it as HTTP codes (UNAVAILABLE is
# 503, DEADLINE_EXCEEDED 504, INTERNAL and UNKNOWN 500). Only gateway
# failures (502/503/504, and connection failures) eject: INTERNAL and
# UNKNOWN are often an application's answer to one bad request, and
# ejecting on them would let one client's requests empty the cluster.
_CONSECUTIVE_FAILURES = 5
_OUTLIER_INTERVAL_SECONDS = 5
_BASE_EJECTION_SECONDS = 30
_MAX_EJECTION_SECONDS = 300
# Never eject more than half the endpoints (and never a lone endpoint):
# sending calls to a suspect endpoint beats having none.
_MAX_EJECTION_PERCENT = 50

# Active gRPC health checks, for Services that opt in.
HEALTH_CHECK_INTERVAL_SECONDS = 5
_HEALTH_CHECK_TIMEOUT_SECONDS = 1
_UNHEALTHY_THRESHOLD = 2
_HEALTHY_THRESHOLD = 1


# Ring hash keeps Envoy's default ring (1024 to 8M entries): enough spread for
# the endpoint counts of one Service, and the hash key comes from the route
# (route.py, hash_policy on the header).
_LB_POLICIES = {
    ir.LoadBalancer.ROUND_ROBIN: cluster_pb2.Cluster.ROUND_ROBIN,
    ir.LoadBalancer.LEAST_REQUEST: cluster_pb2.Cluster.LEAST_REQUEST,
    ir.LoadBalancer.RING_HASH: cluster_pb2.Cluster.RING_HASH,
}


def build_cluster(backend: ir.Backend) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(
        name=backend.name,
        type=cluster_pb2.Cluster.EDS,
        eds_cluster_config=cluster_pb2.Cluster.EdsClusterConfig(
            eds_config=ads_config_source(), service_name=backend.name
        ),
        connect_timeout=seconds(_CONNECT_TIMEOUT_SECONDS),
        lb_policy=_LB_POLICIES[backend.load_balancer],
    )
    # The same for every cluster: copied from one built once (per protocol),
    # not rebuilt message by message 10k times on a cold start.
    shared = _shared_parts(backend.protocol)
    cluster.circuit_breakers.CopyFrom(shared.circuit_breakers)
    cluster.outlier_detection.CopyFrom(shared.outlier_detection)
    cluster.typed_extension_protocol_options[UPSTREAM_HTTP_PROTOCOL_OPTIONS].CopyFrom(
        shared.typed_extension_protocol_options[UPSTREAM_HTTP_PROTOCOL_OPTIONS]
    )
    if backend.tls is not None:
        cluster.transport_socket.CopyFrom(
            base_pb2.TransportSocket(
                name=TLS_TRANSPORT_SOCKET,
                typed_config=typed(upstream_tls_context(backend.tls, protocol=backend.protocol)),
            )
        )
    if backend.health_check is not None:
        cluster.health_checks.append(grpc_health_check(backend.health_check))
    return cluster


@functools.cache
def _shared_parts(protocol: ir.UpstreamProtocol) -> cluster_pb2.Cluster:
    """A cluster holding only the parts every cluster of `protocol` has; never mutated."""
    parts = cluster_pb2.Cluster(
        circuit_breakers=circuit_breakers(), outlier_detection=outlier_detection()
    )
    parts.typed_extension_protocol_options[UPSTREAM_HTTP_PROTOCOL_OPTIONS].CopyFrom(
        typed(upstream_protocol_options(protocol))
    )
    return parts


def upstream_protocol_options(
    protocol: ir.UpstreamProtocol,
) -> upstream_http_pb2.HttpProtocolOptions:
    """Speak the backend's protocol explicitly, never the client's.

    Envoy multiplexes many client calls onto a few HTTP/2 connections per
    backend; that only happens when HTTP/2 is stated here. No HTTP/2
    keepalive: grpc-go servers answer pings sent more often than every 5
    minutes with GOAWAY "too_many_pings".
    """
    match protocol:
        case ir.UpstreamProtocol.H2C | ir.UpstreamProtocol.H2:
            explicit = upstream_http_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                http2_protocol_options=protocol_pb2.Http2ProtocolOptions(
                    max_concurrent_streams=wrappers_pb2.UInt32Value(
                        value=UPSTREAM_MAX_CONCURRENT_STREAMS
                    ),
                    initial_stream_window_size=wrappers_pb2.UInt32Value(
                        value=_UPSTREAM_STREAM_WINDOW_BYTES
                    ),
                    initial_connection_window_size=wrappers_pb2.UInt32Value(
                        value=_UPSTREAM_CONNECTION_WINDOW_BYTES
                    ),
                )
            )
        case ir.UpstreamProtocol.HTTP1:
            explicit = upstream_http_pb2.HttpProtocolOptions.ExplicitHttpConfig(
                http_protocol_options=protocol_pb2.Http1ProtocolOptions()
            )
        case _:
            assert_never(protocol)
    return upstream_http_pb2.HttpProtocolOptions(explicit_http_config=explicit)


def upstream_tls_context(
    tls: ir.UpstreamTls, *, protocol: ir.UpstreamProtocol
) -> tls_pb2.UpstreamTlsContext:
    """TLS to the backend, offering the ALPN of the protocol the cluster speaks.

    Without a CA the backend's certificate is not verified, as ingress-nginx
    does not verify by default (in-cluster serving certificates are commonly
    self-signed): this encrypts the hop but does not authenticate the pod.
    With a CA (over SDS) the certificate must chain to it and, when an SNI
    is sent, name it: Envoy checks no name unless told which.
    """
    alpn = ["h2"] if protocol is not ir.UpstreamProtocol.HTTP1 else ["http/1.1"]
    common = tls_pb2.CommonTlsContext(alpn_protocols=alpn)
    if tls.ca is not None:
        names = common_pb2.CertificateValidationContext()
        if tls.sni:
            names.match_typed_subject_alt_names.append(
                common_pb2.SubjectAltNameMatcher(
                    san_type=common_pb2.SubjectAltNameMatcher.DNS,
                    matcher=string_pb2.StringMatcher(exact=tls.sni),
                )
            )
        common.combined_validation_context.CopyFrom(
            tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
                default_validation_context=names,
                validation_context_sds_secret_config=sds_secret_config(tls.ca.name),
            )
        )
    return tls_pb2.UpstreamTlsContext(sni=tls.sni, common_tls_context=common)


def circuit_breakers() -> circuit_breaker_pb2.CircuitBreakers:
    return circuit_breaker_pb2.CircuitBreakers(
        thresholds=[
            circuit_breaker_pb2.CircuitBreakers.Thresholds(
                priority=base_pb2.DEFAULT,
                max_connections=wrappers_pb2.UInt32Value(value=MAX_CONNECTIONS),
                max_pending_requests=wrappers_pb2.UInt32Value(value=MAX_PENDING_REQUESTS),
                max_requests=wrappers_pb2.UInt32Value(value=MAX_REQUESTS),
                # With a budget, Envoy ignores max_retries.
                retry_budget=circuit_breaker_pb2.CircuitBreakers.Thresholds.RetryBudget(
                    budget_percent=percent_pb2.Percent(value=RETRY_BUDGET_PERCENT),
                    min_retry_concurrency=wrappers_pb2.UInt32Value(value=RETRY_MIN_CONCURRENCY),
                ),
                # Exposes remaining capacity as gauges, to alert before a trip.
                track_remaining=True,
            )
        ]
    )


def outlier_detection() -> outlier_detection_pb2.OutlierDetection:
    hundred = wrappers_pb2.UInt32Value(value=100)
    return outlier_detection_pb2.OutlierDetection(
        consecutive_5xx=wrappers_pb2.UInt32Value(value=_CONSECUTIVE_FAILURES),
        # Counted (its stats are kept) but never enforced; see above.
        enforcing_consecutive_5xx=wrappers_pb2.UInt32Value(value=0),
        consecutive_gateway_failure=wrappers_pb2.UInt32Value(value=_CONSECUTIVE_FAILURES),
        # Envoy's default for this one is 0 (never eject).
        enforcing_consecutive_gateway_failure=hundred,
        # Success-rate ejection needs steady volume per endpoint; off.
        enforcing_success_rate=wrappers_pb2.UInt32Value(value=0),
        interval=seconds(_OUTLIER_INTERVAL_SECONDS),
        base_ejection_time=seconds(_BASE_EJECTION_SECONDS),
        max_ejection_time=seconds(_MAX_EJECTION_SECONDS),
        max_ejection_percent=wrappers_pb2.UInt32Value(value=_MAX_EJECTION_PERCENT),
    )


def grpc_health_check(check: ir.GrpcHealthCheck) -> health_check_pb2.HealthCheck:
    return health_check_pb2.HealthCheck(
        timeout=seconds(_HEALTH_CHECK_TIMEOUT_SECONDS),
        interval=seconds(HEALTH_CHECK_INTERVAL_SECONDS),
        # Spread the probes of many Envoys over the interval.
        interval_jitter=duration_pb2.Duration(nanos=500_000_000),
        unhealthy_threshold=wrappers_pb2.UInt32Value(value=_UNHEALTHY_THRESHOLD),
        healthy_threshold=wrappers_pb2.UInt32Value(value=_HEALTHY_THRESHOLD),
        grpc_health_check=health_check_pb2.HealthCheck.GrpcHealthCheck(service_name=check.service),
    )
