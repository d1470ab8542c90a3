"""The gRPC production defaults as Envoy resources, and a real Envoy accepting every option."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import health_check_pb2
from envoy.extensions.filters.http.grpc_stats.v3 import config_pb2 as grpc_stats_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2 as upstream_http_pb2
from resource_messages import as_messages

from xds_ingress import ir
from xds_ingress.resources import types
from xds_ingress.resources.builder import ResourceBuilder
from xds_ingress.resources.cluster import UPSTREAM_HTTP_PROTOCOL_OPTIONS
from xds_ingress.resources.static import render_static_bootstrap

ENVOY = Path(sys.executable).parent / "envoy"
ORIGIN = ir.ObjectRef(kind="Ingress", namespace="default", name="grpc")
TUNED = ir.RoutePolicy(
    grpc_timeout_max_ms=30_000,
    stream_idle_timeout_ms=1_500,
    retry_on=("cancelled", "resource-exhausted", "unavailable"),
    num_retries=3,
)

GUARDED = ir.RoutePolicy(hash_header="x-user", grpc_only=True, client_certificate_required=True)


def route(name: str, value: str, backend: str, policy: ir.RoutePolicy) -> ir.Route:
    return ir.Route(
        name=name,
        path=ir.PathMatch(type=ir.PathMatchType.PREFIX, value=value),
        action=ir.Forward(backend=backend, policy=policy),
        origin=ORIGIN,
    )


def every_option() -> ir.Config:
    host = ir.VirtualHost(
        name="grpc.example.com",
        domains=("grpc.example.com",),
        routes=(
            route("default", "/pkg.Default", "tls", ir.RoutePolicy()),
            route("tuned", "/pkg.Tuned", "checked", TUNED),
            route("hashed", "/hashed", "hashed", GUARDED),
            route(
                "no-retries", "/", "web", ir.RoutePolicy(num_retries=0, stream_idle_timeout_ms=0)
            ),
        ),
    )
    # Every forwarding route retries alike: said once, on the host.
    shared = ir.VirtualHost(
        name="shared.example.com",
        domains=("shared.example.com",),
        routes=(
            route("one", "/pkg.One", "tls", ir.RoutePolicy(stream_idle_timeout_ms=1_000)),
            ir.Route(
                name="split",
                path=ir.PathMatch(type=ir.PathMatchType.PREFIX, value="/pkg.Split"),
                action=ir.WeightedForward(
                    backends=(
                        ir.WeightedBackend(backend="tls", weight=1),
                        ir.WeightedBackend(backend="checked", weight=3),
                    )
                ),
                origin=ORIGIN,
            ),
            ir.Route(
                name="gone",
                path=ir.PathMatch(type=ir.PathMatchType.PREFIX, value="/"),
                action=ir.DirectResponse(status=503),
                origin=ORIGIN,
            ),
        ),
    )
    return ir.Config(
        listeners=(
            ir.Listener(
                name="http",
                address="127.0.0.1",
                port=8080,
                route_config="http",
                limits=ir.DownstreamLimits(max_connection_duration_s=120, drain_timeout_s=3),
            ),
            ir.Listener(
                name="unlimited",
                address="127.0.0.1",
                port=8081,
                route_config="http",
                limits=ir.DownstreamLimits(max_connection_duration_s=0, drain_timeout_s=0),
            ),
        ),
        route_configs=(ir.RouteConfig(name="http", virtual_hosts=(host, shared)),),
        backends=(
            ir.Backend(
                name="tls",
                protocol=ir.UpstreamProtocol.H2,
                endpoints=(
                    ir.Endpoint("10.0.0.1", 443),
                    ir.Endpoint("10.0.0.2", 443, ir.EndpointHealth.DRAINING),
                ),
                tls=ir.UpstreamTls(sni="greeter.default.svc"),
                health_check=ir.GrpcHealthCheck(service="pkg.Greeter"),
            ),
            ir.Backend(
                name="checked",
                protocol=ir.UpstreamProtocol.H2C,
                endpoints=(ir.Endpoint("10.0.0.3", 50051),),
                health_check=ir.GrpcHealthCheck(),
            ),
            ir.Backend(
                name="web",
                protocol=ir.UpstreamProtocol.HTTP1,
                endpoints=(ir.Endpoint("10.0.0.4", 8080),),
            ),
            ir.Backend(
                name="hashed",
                protocol=ir.UpstreamProtocol.H2C,
                endpoints=(ir.Endpoint("10.0.0.5", 50051),),
                load_balancer=ir.LoadBalancer.RING_HASH,
            ),
            ir.Backend(
                name="least",
                protocol=ir.UpstreamProtocol.H2C,
                endpoints=(ir.Endpoint("10.0.0.6", 50051),),
                load_balancer=ir.LoadBalancer.LEAST_REQUEST,
            ),
        ),
    )


@pytest.fixture(scope="module")
def built() -> dict[str, dict[str, Any]]:
    return as_messages(ResourceBuilder().build(every_option()))


def test_envoy_accepts_every_option(built: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    document = render_static_bootstrap(
        built, node_id="validate", node_cluster="xds-ingress", admin_address=None
    )
    path = tmp_path / "every-option.json"
    path.write_text(json.dumps(document))
    result = subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(path), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def virtual_host(built: dict[str, dict[str, Any]], name: str = "grpc.example.com") -> Any:
    (vhost,) = (v for v in built[types.ROUTE]["http"].virtual_hosts if v.name == name)
    return vhost


def routes(built: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {r.name: r.route for r in virtual_host(built).routes}


def test_routes_retry_unavailable_by_default_on_another_host(
    built: dict[str, dict[str, Any]],
) -> None:
    action = routes(built)["default"]
    assert action.timeout.ToNanoseconds() == 0
    assert action.max_stream_duration.grpc_timeout_header_max.ToNanoseconds() == 0
    assert not action.HasField("idle_timeout")  # the listener's applies
    retry = action.retry_policy
    assert retry.retry_on == "connect-failure,refused-stream,unavailable"
    assert retry.num_retries.value == 2
    assert not retry.HasField("per_try_timeout")
    (predicate,) = retry.retry_host_predicate
    assert predicate.name == "envoy.retry_host_predicates.previous_hosts"


def test_route_annotations_cap_grpc_timeout_set_idle_and_retries(
    built: dict[str, dict[str, Any]],
) -> None:
    action = routes(built)["tuned"]
    assert action.max_stream_duration.grpc_timeout_header_max.ToMilliseconds() == 30_000
    assert action.idle_timeout.ToMilliseconds() == 1_500
    assert action.retry_policy.retry_on == (
        "connect-failure,refused-stream,cancelled,resource-exhausted,unavailable"
    )
    assert action.retry_policy.num_retries.value == 3
    untried = routes(built)["no-retries"]
    assert not untried.HasField("retry_policy")
    assert untried.HasField("idle_timeout") and untried.idle_timeout.ToNanoseconds() == 0
    # Routes that retry differently (or not at all) keep their own policies:
    # one on the host would be inherited by the route that retries nothing.
    assert not virtual_host(built).HasField("retry_policy")


def test_a_retry_policy_every_forwarding_route_shares_is_said_once_on_its_host(
    built: dict[str, dict[str, Any]],
) -> None:
    vhost = virtual_host(built, "shared.example.com")
    retry = vhost.retry_policy
    assert retry.retry_on == "connect-failure,refused-stream,unavailable"
    assert retry.num_retries.value == 2
    (predicate,) = retry.retry_host_predicate
    assert predicate.name == "envoy.retry_host_predicates.previous_hosts"
    forwarding = {r.name: r.route for r in vhost.routes if r.HasField("route")}
    assert set(forwarding) == {"one", "split"}
    assert not any(action.HasField("retry_policy") for action in forwarding.values())
    # The rest of each route's policy stays on the route.
    assert forwarding["one"].idle_timeout.ToMilliseconds() == 1_000
    assert len(forwarding["split"].weighted_clusters.clusters) == 2


def test_clusters_are_sized_for_a_gateway(built: dict[str, dict[str, Any]]) -> None:
    for name, cluster in built[types.CLUSTER].items():
        (thresholds,) = cluster.circuit_breakers.thresholds
        assert thresholds.max_requests.value >= 10_000, name
        # A burst on a cold pool waits whole for the first connections: any
        # call that may be in flight may have to wait (coalescing benchmark).
        assert thresholds.max_pending_requests.value >= thresholds.max_requests.value, name
        assert thresholds.max_connections.value >= 10_000, name
        assert thresholds.retry_budget.budget_percent.value == 20.0
        assert thresholds.retry_budget.min_retry_concurrency.value == 3
        outlier = cluster.outlier_detection
        assert outlier.consecutive_gateway_failure.value == 5
        assert outlier.enforcing_consecutive_gateway_failure.value == 100
        assert outlier.max_ejection_percent.value == 50


def upstream_http2(cluster: Any) -> Any:
    options = upstream_http_pb2.HttpProtocolOptions()
    assert cluster.typed_extension_protocol_options[UPSTREAM_HTTP_PROTOCOL_OPTIONS].Unpack(options)
    return options.explicit_http_config.http2_protocol_options


def test_h2_clusters_multiplex_many_calls_per_connection(
    built: dict[str, dict[str, Any]],
) -> None:
    for name in ("tls", "checked"):
        http2 = upstream_http2(built[types.CLUSTER][name])
        assert http2.max_concurrent_streams.value == 1024
        assert http2.initial_stream_window_size.value == 1024 * 1024
        assert http2.initial_connection_window_size.value == 16 * 1024 * 1024


def test_grpcs_backends_get_tls_with_sni_and_alpn_h2(built: dict[str, dict[str, Any]]) -> None:
    socket = built[types.CLUSTER]["tls"].transport_socket
    assert socket.name == "envoy.transport_sockets.tls"
    context = tls_pb2.UpstreamTlsContext()
    assert socket.typed_config.Unpack(context)
    assert context.sni == "greeter.default.svc"
    assert list(context.common_tls_context.alpn_protocols) == ["h2"]
    assert not built[types.CLUSTER]["checked"].HasField("transport_socket")


def test_grpc_health_checks_when_the_service_opts_in(built: dict[str, dict[str, Any]]) -> None:
    (check,) = built[types.CLUSTER]["tls"].health_checks
    assert check.interval.seconds == 5
    assert check.grpc_health_check.service_name == "pkg.Greeter"
    (check,) = built[types.CLUSTER]["checked"].health_checks
    assert check.grpc_health_check.service_name == ""
    assert not built[types.CLUSTER]["web"].health_checks


def test_endpoints_carry_their_health(built: dict[str, dict[str, Any]]) -> None:
    (locality,) = built[types.ENDPOINT]["tls"].endpoints
    assert [e.health_status for e in locality.lb_endpoints] == [
        health_check_pb2.HEALTHY,
        health_check_pb2.DRAINING,
    ]


def hcm(listener: Any) -> Any:
    (chain,) = listener.filter_chains
    (network_filter,) = chain.filters
    manager = hcm_pb2.HttpConnectionManager()
    assert network_filter.typed_config.Unpack(manager)
    return manager


def test_listeners_bound_connection_age_and_run_grpc_web_and_stats_before_the_router(
    built: dict[str, dict[str, Any]],
) -> None:
    manager = hcm(built[types.LISTENER]["http"])
    assert [f.name for f in manager.http_filters] == [
        "envoy.filters.http.grpc_web",
        "grpc_stats",
        "envoy.filters.http.router",
    ]
    # Over ECDS (see extension_config.py); its fallback is per cluster only,
    # never per client-named method.
    discovery = manager.http_filters[1].config_discovery
    assert discovery.config_source.HasField("ads")
    stats = grpc_stats_pb2.FilterConfig()
    assert discovery.default_config.Unpack(stats)
    assert stats.HasField("stats_for_all_methods")
    assert not stats.stats_for_all_methods.value
    # No access log reads the per-call filter state: not paid for.
    assert not stats.emit_filter_state
    assert manager.common_http_protocol_options.max_connection_duration.seconds == 120
    assert manager.drain_timeout.seconds == 3
    unlimited = hcm(built[types.LISTENER]["unlimited"])
    assert not unlimited.common_http_protocol_options.HasField("max_connection_duration")
    assert not unlimited.HasField("drain_timeout")


def test_https_listeners_get_the_same_limits() -> None:
    listener = ir.HttpsListener(
        name="https",
        address="127.0.0.1",
        port=8443,
        filter_chains=(
            ir.TlsFilterChain(certificate="d/c", server_names=("a.test",), route_config="h"),
        ),
    )
    (message,) = (
        ResourceBuilder().build(ir.Config(https_listeners=(listener,)))[types.LISTENER].values()
    )
    manager = hcm(message)
    assert manager.common_http_protocol_options.max_connection_duration.seconds == 600
    assert [f.name for f in manager.http_filters][-1] == "envoy.filters.http.router"


def all_routes(built: dict[str, dict[str, Any]]) -> list[Any]:
    return list(virtual_host(built).routes)


def test_guards_come_right_before_their_route(built: dict[str, dict[str, Any]]) -> None:
    assert [r.name for r in all_routes(built)] == [
        # "/pkg.Default" names a gRPC service: gRPC only by its path.
        "default/not-grpc",
        "default",
        "tuned/not-grpc",
        "tuned",
        "hashed/client-certificate-required",
        "hashed/not-grpc",
        "hashed",
        "no-retries",
    ]
    by_name = {r.name: r for r in all_routes(built)}
    certificate = by_name["hashed/client-certificate-required"]
    assert certificate.match.path_separated_prefix == "/hashed"
    assert certificate.match.tls_context.HasField("validated")
    assert not certificate.match.tls_context.validated.value
    assert certificate.direct_response.status == 403
    not_grpc = by_name["hashed/not-grpc"]
    assert not_grpc.match.path_separated_prefix == "/hashed"
    method, content_type = not_grpc.match.headers
    assert (method.name, method.string_match.exact, method.invert_match) == (
        ":method",
        "OPTIONS",
        True,
    )
    assert content_type.name == "content-type"
    assert content_type.string_match.prefix == "application/grpc"
    assert content_type.string_match.ignore_case
    assert content_type.invert_match and content_type.treat_missing_header_as_empty
    assert not_grpc.direct_response.status == 415
    assert "gRPC only" in not_grpc.direct_response.body.inline_string


def test_ring_hash_hashes_the_header_and_clusters_take_their_balancer(
    built: dict[str, dict[str, Any]],
) -> None:
    (hash_policy,) = routes(built)["hashed"].hash_policy
    assert hash_policy.header.header_name == "x-user"
    assert not routes(built)["default"].hash_policy
    clusters = built[types.CLUSTER]
    assert clusters["hashed"].lb_policy == cluster_pb2.Cluster.RING_HASH
    assert clusters["least"].lb_policy == cluster_pb2.Cluster.LEAST_REQUEST
    assert clusters["web"].lb_policy == cluster_pb2.Cluster.ROUND_ROBIN


CA = ir.CaBundle(name="default/backend-ca/ca.crt", ca_pem="-----BEGIN CERTIFICATE-----\n")


def test_a_verified_backend_names_its_ca_over_sds_and_checks_the_sni() -> None:
    backend = ir.Backend(
        name="verified",
        protocol=ir.UpstreamProtocol.H2,
        endpoints=(),
        tls=ir.UpstreamTls(sni="greeter.default.svc", ca=CA),
    )
    built = ResourceBuilder().build(ir.Config(backends=(backend,)))
    context = tls_pb2.UpstreamTlsContext()
    assert built[types.CLUSTER]["verified"].transport_socket.typed_config.Unpack(context)
    combined = context.common_tls_context.combined_validation_context
    assert combined.validation_context_sds_secret_config.name == CA.name
    assert combined.validation_context_sds_secret_config.sds_config.HasField("ads")
    (san,) = combined.default_validation_context.match_typed_subject_alt_names
    assert (san.san_type, san.matcher.exact) == (
        common_pb2.SubjectAltNameMatcher.DNS,
        "greeter.default.svc",
    )
    # The CA travels as an SDS Secret of its own, never inline in the cluster.
    secret = built[types.SECRET][CA.name]
    assert secret.validation_context.trusted_ca.inline_string == CA.ca_pem
    assert CA.ca_pem not in str(built[types.CLUSTER]["verified"])
    assert CA.ca_pem not in repr(CA)
