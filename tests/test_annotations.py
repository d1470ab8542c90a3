"""Annotations in, IR out: production defaults, per-Ingress overrides, and bad values reported."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from test_translate import (
    backends,
    conditions,
    endpoint_slice,
    ingress,
    messages,
    path,
    rule,
    run,
    service,
)
from tls_certs import CertificateAuthority

from xds_ingress import ir
from xds_ingress.translate.annotations import parse_duration_ms

PLAIN_PORT = {"name": "web", "port": 80}
INVALID = ("Accepted", "False", "InvalidAnnotation")


def policies(translation: ir.Translation) -> set[ir.RoutePolicy]:
    return {
        route.action.policy
        for route_config in translation.config.route_configs
        for vhost in route_config.virtual_hosts
        for route in vhost.routes
        if isinstance(route.action, ir.Forward)
    }


def annotated(annotations: Mapping[str, str], *, port: int | str = "grpc") -> ir.Translation:
    return run(
        service("s", ports=[{"name": "grpc", "port": 50051, "appProtocol": "grpc"}, PLAIN_PORT]),
        ingress("web", rule("a.example.com", path("/", "s", port=port)), annotations=annotations),
    )


def test_routes_get_the_production_defaults_without_annotations() -> None:
    translation = annotated({})
    assert policies(translation) == {ir.RoutePolicy()}
    default = ir.RoutePolicy()
    assert (default.grpc_timeout_max_ms, default.stream_idle_timeout_ms) == (0, None)
    assert (default.retry_on, default.num_retries) == (("unavailable",), 2)
    (listener,) = translation.config.listeners
    assert listener.limits == ir.DownstreamLimits(max_connection_duration_s=600, drain_timeout_s=10)
    assert conditions(translation, "Ingress", "web") == {("Accepted", "True", "Accepted")}


def test_our_annotations_override_the_route_defaults() -> None:
    translation = annotated(
        {
            "xds-ingress.io/grpc-timeout-max": "1m30s",
            "xds-ingress.io/stream-idle-timeout": "2h",
            "xds-ingress.io/retry-on": "UNAVAILABLE, deadline_exceeded,internal",
            "xds-ingress.io/retries": "4",
        }
    )
    assert policies(translation) == {
        ir.RoutePolicy(
            grpc_timeout_max_ms=90_000,
            stream_idle_timeout_ms=7_200_000,
            retry_on=("deadline-exceeded", "internal", "unavailable"),
            num_retries=4,
        )
    }
    assert conditions(translation, "Ingress", "web") == {("Accepted", "True", "Accepted")}


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        ("xds-ingress.io/grpc-timeout-max", "30"),
        ("xds-ingress.io/grpc-timeout-max", "-5s"),
        ("xds-ingress.io/grpc-timeout-max", "99999h"),
        ("xds-ingress.io/stream-idle-timeout", "soon"),
        ("xds-ingress.io/retry-on", "unavailable,not-found"),
        ("xds-ingress.io/retry-on", " , "),
        ("xds-ingress.io/retries", "eleven"),
        ("xds-ingress.io/retries", "11"),
        ("xds-ingress.io/retrys", "2"),
        ("xds-ingress.io/health-check", "grpc"),  # belongs on the Service
        ("nginx.ingress.kubernetes.io/backend-protocol", "FCGI"),
        ("nginx.ingress.kubernetes.io/proxy-read-timeout", "60s"),
    ],
)
def test_an_invalid_value_is_reported_by_name_and_the_default_is_used(
    annotation: str, value: str
) -> None:
    translation = annotated({annotation: value})
    assert conditions(translation, "Ingress", "web") == {INVALID}
    (message,) = messages(translation, "web")
    assert annotation in message
    # The route is still served, with the defaults.
    assert policies(translation) == {ir.RoutePolicy()}
    assert set(backends(translation)) == {"default/s:50051"}


def test_nginx_timeouts_become_the_stream_idle_timeout_and_ours_wins() -> None:
    nginx = {
        "nginx.ingress.kubernetes.io/proxy-read-timeout": "3600",
        "nginx.ingress.kubernetes.io/proxy-send-timeout": "60",
    }
    (policy,) = policies(annotated(nginx))
    assert policy.stream_idle_timeout_ms == 3_600_000
    (policy,) = policies(annotated({**nginx, "xds-ingress.io/stream-idle-timeout": "0"}))
    assert policy.stream_idle_timeout_ms == 0


@pytest.mark.parametrize(
    ("value", "port", "name", "protocol"),
    [
        # A port without appProtocol speaks HTTP/1.1 unless the Ingress says otherwise.
        (None, 80, "default/s:80", ir.UpstreamProtocol.HTTP1),
        ("GRPC", 80, "default/s:80/h2c", ir.UpstreamProtocol.H2C),
        ("http2", 80, "default/s:80/h2c", ir.UpstreamProtocol.H2C),
        ("GRPCS", 80, "default/s:80/h2", ir.UpstreamProtocol.H2),
        # Saying what the Service port says already changes nothing.
        ("GRPC", "grpc", "default/s:50051", ir.UpstreamProtocol.H2C),
        ("HTTP", "grpc", "default/s:50051/http1", ir.UpstreamProtocol.HTTP1),
    ],
)
def test_nginx_backend_protocol_chooses_how_envoy_talks_to_the_service(
    value: str | None, port: int | str, name: str, protocol: ir.UpstreamProtocol
) -> None:
    annotations = {} if value is None else {"nginx.ingress.kubernetes.io/backend-protocol": value}
    translation = annotated(annotations, port=port)
    (backend,) = translation.config.backends
    assert (backend.name, backend.protocol) == (name, protocol)
    assert backend.tls == (
        ir.UpstreamTls(sni="s.default.svc") if protocol is ir.UpstreamProtocol.H2 else None
    )
    (route_config,) = translation.config.route_configs
    (vhost,) = route_config.virtual_hosts
    # ingress-nginx's GRPC and GRPCS say the route serves gRPC only.
    grpc_only = True if value in ("GRPC", "GRPCS") else None
    assert vhost.routes[0].action == ir.Forward(
        backend=name, policy=ir.RoutePolicy(grpc_only=grpc_only)
    )


def test_two_ingresses_may_talk_to_one_service_port_differently() -> None:
    translation = run(
        service("s", ports=[PLAIN_PORT]),
        ingress(
            "grpc",
            rule("a.example.com", path("/", "s", port=80)),
            annotations={"nginx.ingress.kubernetes.io/backend-protocol": "GRPC"},
        ),
        ingress("web", rule("b.example.com", path("/", "s", port=80))),
    )
    assert set(backends(translation)) == {"default/s:80", "default/s:80/h2c"}


def _service_with(annotations: Mapping[str, str], port: Mapping[str, Any]) -> dict[str, Any]:
    body = service("s", ports=[port])
    body["metadata"]["annotations"] = dict(annotations)
    return body


GRPC_PORT = {"name": "grpc", "port": 50051, "appProtocol": "grpc"}


@pytest.mark.parametrize(
    ("annotations", "check", "reported"),
    [
        ({}, None, False),
        ({"xds-ingress.io/health-check": "grpc"}, ir.GrpcHealthCheck(), False),
        ({"xds-ingress.io/health-check": "none"}, None, False),
        (
            {
                "xds-ingress.io/health-check": "grpc",
                "xds-ingress.io/health-check-service": "pkg.v1.Greeter",
            },
            ir.GrpcHealthCheck(service="pkg.v1.Greeter"),
            False,
        ),
        (
            {
                "xds-ingress.io/health-check": "grpc",
                "xds-ingress.io/health-check-service": "not a service",
            },
            ir.GrpcHealthCheck(),
            True,
        ),
        ({"xds-ingress.io/health-check": "http"}, None, True),
        ({"xds-ingress.io/health-check-service": "pkg.Greeter"}, None, True),
    ],
)
def test_a_service_opts_into_grpc_health_checks(
    annotations: Mapping[str, str], check: ir.GrpcHealthCheck | None, reported: bool
) -> None:
    translation = run(
        _service_with(annotations, GRPC_PORT), ingress("web", rule(None, path("/", "s")))
    )
    (backend,) = translation.config.backends
    assert backend.health_check == check
    assert (conditions(translation, "Service", "s") == {INVALID}) is reported
    if reported:
        assert any("xds-ingress.io/health-check" in m for m in messages(translation, "s"))


def test_grpc_health_checks_need_a_grpc_port() -> None:
    translation = run(
        _service_with({"xds-ingress.io/health-check": "grpc"}, PLAIN_PORT),
        ingress("web", rule(None, path("/", "s", port=80))),
    )
    (backend,) = translation.config.backends
    assert backend.health_check is None
    assert conditions(translation, "Service", "s") == {INVALID}


def endpoint(address: str, **conditions: bool | None) -> dict[str, Any]:
    return {
        "addresses": [address],
        "conditions": {k: v for k, v in conditions.items() if v is not None},
    }


def test_terminating_endpoints_that_still_serve_are_drained_not_dropped() -> None:
    healthy, draining = ir.EndpointHealth.HEALTHY, ir.EndpointHealth.DRAINING
    translation = run(
        service("s"),
        endpoint_slice(
            "s-1",
            service="s",
            endpoints=[
                endpoint("10.0.0.1", ready=True, serving=True, terminating=False),
                endpoint("10.0.0.2"),  # no conditions: ready
                endpoint("10.0.0.3", ready=False, serving=True, terminating=True),
                endpoint("10.0.0.4", ready=False, serving=False, terminating=True),
                # Not ready and not terminating: starting up, or failing its probe.
                endpoint("10.0.0.5", ready=False, serving=True, terminating=False),
                endpoint("10.0.0.6", ready=False),
                endpoint("10.0.0.7", ready=False, serving=True, terminating=True),
            ],
        ),
        # 10.0.0.7 is ready in another slice: ready wins.
        endpoint_slice("s-2", service="s", endpoints=[endpoint("10.0.0.7", ready=True)]),
        ingress("web", rule(None, path("/", "s"))),
    )
    assert backends(translation)["default/s:50051"].endpoints == (
        ir.Endpoint("10.0.0.1", 9000, healthy),
        ir.Endpoint("10.0.0.2", 9000, healthy),
        ir.Endpoint("10.0.0.3", 9000, draining),
        ir.Endpoint("10.0.0.7", 9000, healthy),
    )


@pytest.mark.parametrize(
    ("text", "milliseconds"),
    [
        ("0", 0),
        ("0s", 0),
        ("250ms", 250),
        ("30s", 30_000),
        ("1h30m", 5_400_000),
        (" 2m ", 120_000),
        ("720h", 720 * 3_600_000),
        ("721h", None),
        ("30", None),
        ("1.5s", None),
        ("s", None),
        ("", None),
        ("1d", None),
        ("-1s", None),
    ],
)
def test_durations(text: str, milliseconds: int | None) -> None:
    assert parse_duration_ms(text) == milliseconds


# ---------------------------------------------------------------- load balancing, gRPC-only, TLS


def only_backend(translation: ir.Translation) -> ir.Backend:
    (backend,) = translation.config.backends
    return backend


@pytest.mark.parametrize(
    ("annotations", "balancer", "header", "name"),
    [
        ({}, ir.LoadBalancer.ROUND_ROBIN, None, "default/s:50051"),
        (
            {"xds-ingress.io/load-balancer": "least-request"},
            ir.LoadBalancer.LEAST_REQUEST,
            None,
            "default/s:50051/least-request",
        ),
        (
            {"xds-ingress.io/load-balancer": "Ring-Hash", "xds-ingress.io/hash-header": "X-User"},
            ir.LoadBalancer.RING_HASH,
            "x-user",
            "default/s:50051/ring-hash",
        ),
        # A hash header alone asks for ring hash.
        (
            {"xds-ingress.io/hash-header": "x-user"},
            ir.LoadBalancer.RING_HASH,
            "x-user",
            "default/s:50051/ring-hash",
        ),
    ],
)
def test_load_balancer_annotations_choose_the_cluster_policy_and_the_hash(
    annotations: dict[str, str], balancer: ir.LoadBalancer, header: str | None, name: str
) -> None:
    translation = annotated(annotations)
    backend = only_backend(translation)
    assert (backend.name, backend.load_balancer) == (name, balancer)
    assert policies(translation) == {ir.RoutePolicy(hash_header=header)}
    assert conditions(translation, "Ingress", "web") == {("Accepted", "True", "Accepted")}


@pytest.mark.parametrize(
    ("annotations", "words"),
    [
        ({"xds-ingress.io/load-balancer": "random"}, "'random' is not one of"),
        ({"xds-ingress.io/load-balancer": "ring-hash"}, "ring-hash needs"),
        (
            {"xds-ingress.io/load-balancer": "least-request", "xds-ingress.io/hash-header": "x"},
            "only ring-hash hashes a header",
        ),
        ({"xds-ingress.io/hash-header": ":path"}, "is not an HTTP header name"),
    ],
)
def test_bad_load_balancer_annotations_are_reported_and_round_robin_kept(
    annotations: dict[str, str], words: str
) -> None:
    translation = annotated(annotations)
    assert INVALID in conditions(translation, "Ingress", "web")
    assert any(words in message for message in messages(translation, "web")), messages(
        translation, "web"
    )
    assert only_backend(translation).load_balancer in (
        ir.LoadBalancer.ROUND_ROBIN,
        ir.LoadBalancer.LEAST_REQUEST,
    )
    assert all(policy.hash_header is None for policy in policies(translation))


@pytest.mark.parametrize(
    ("annotations", "grpc_only"),
    [
        ({}, None),
        ({"xds-ingress.io/grpc-only": "true"}, True),
        ({"xds-ingress.io/grpc-only": "False"}, False),
        ({"nginx.ingress.kubernetes.io/backend-protocol": "GRPCS"}, True),
        ({"nginx.ingress.kubernetes.io/backend-protocol": "HTTP2"}, None),
        # Ours wins over ingress-nginx's.
        (
            {
                "nginx.ingress.kubernetes.io/backend-protocol": "GRPC",
                "xds-ingress.io/grpc-only": "false",
            },
            False,
        ),
    ],
)
def test_grpc_only_comes_from_our_annotation_or_nginx_grpc(
    annotations: dict[str, str], grpc_only: bool | None
) -> None:
    assert {p.grpc_only for p in policies(annotated(annotations))} == {grpc_only}


def test_paths_naming_a_grpc_service_are_grpc_only() -> None:
    def names(value: str, kind: ir.PathMatchType = ir.PathMatchType.PREFIX) -> bool:
        return ir.names_grpc_service(ir.PathMatch(type=kind, value=value))

    assert names("/helloworld.Greeter")
    assert names("/helloworld.Greeter/")
    assert names("/pkg.v1.Service/Method", ir.PathMatchType.EXACT)
    assert not names("/")
    assert not names("/api.v1/")  # a version, not a service type
    assert not names("/Greeter/")  # no package: could be anything
    assert not names("/pkg.Service/a/b")
    assert not names("/pkg\\.Service/.*", ir.PathMatchType.REGEX)


def ca_secret(name: str, pem: str = "") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        "type": "Opaque",
        "stringData": {"ca.crt": pem},
    }


def grpcs(annotations: Mapping[str, str], *extra: Mapping[str, Any]) -> ir.Translation:
    return run(
        service("s", ports=[PLAIN_PORT]),
        ingress(
            "web",
            rule("a.example.com", path("/", "s", port=80)),
            annotations={"nginx.ingress.kubernetes.io/backend-protocol": "GRPCS", **annotations},
        ),
        *extra,
    )


def test_a_backend_ca_secret_verifies_grpcs_backends_with_the_service_name_as_sni() -> None:
    ca = CertificateAuthority()
    translation = grpcs(
        {"xds-ingress.io/backend-ca-secret": "backend-ca"},
        ca_secret("backend-ca", ca.pem.decode()),
    )
    backend = only_backend(translation)
    assert backend.name == "default/s:80/h2/ca=backend-ca"
    assert backend.tls is not None and backend.tls.ca is not None
    assert (backend.tls.sni, backend.tls.ca.name) == ("s.default.svc", "default/backend-ca/ca.crt")
    assert backend.tls.ca.ca_pem == ca.pem.decode()
    # The SNI may be set, or ("") not sent at all.
    for sni, name in (("grpc.internal", "grpc.internal"), ("", "")):
        translation = grpcs(
            {"xds-ingress.io/backend-ca-secret": "backend-ca", "xds-ingress.io/backend-sni": sni},
            ca_secret("backend-ca", ca.pem.decode()),
        )
        tls = only_backend(translation).tls
        assert tls is not None and tls.sni == name


@pytest.mark.parametrize(
    ("extra", "reason"),
    [((), "SecretNotFound"), ((ca_secret("backend-ca", "not a certificate"),), "InvalidCASecret")],
)
def test_a_backend_ca_that_cannot_be_used_fails_closed_with_503(
    extra: tuple[dict[str, Any], ...], reason: str
) -> None:
    translation = grpcs({"xds-ingress.io/backend-ca-secret": "backend-ca"}, *extra)
    assert translation.config.backends == ()
    (route_config,) = translation.config.route_configs
    (vhost,) = route_config.virtual_hosts
    action = vhost.routes[0].action
    assert isinstance(action, ir.DirectResponse) and action.status == 503
    assert ("ResolvedRefs", "False", reason) in conditions(translation, "Ingress", "web")


def test_client_certificate_annotations_set_the_route_guard() -> None:
    required = annotated({"xds-ingress.io/client-ca-secret": "clients"})
    assert {p.client_certificate_required for p in policies(required)} == {True}
    optional = annotated(
        {"xds-ingress.io/client-ca-secret": "clients", "xds-ingress.io/client-cert": "optional"}
    )
    assert {p.client_certificate_required for p in policies(optional)} == {False}
    # A typo fails closed: required.
    typo = annotated(
        {"xds-ingress.io/client-ca-secret": "clients", "xds-ingress.io/client-cert": "optinal"}
    )
    assert {p.client_certificate_required for p in policies(typo)} == {True}
    assert INVALID in conditions(typo, "Ingress", "web")


def test_annotations_that_cannot_apply_here_are_reported() -> None:
    # A backend CA for a backend spoken to without TLS.
    translation = annotated({"xds-ingress.io/backend-ca-secret": "ca"})
    assert INVALID in conditions(translation, "Ingress", "web")
    assert any(
        "needs nginx.ingress.kubernetes.io/backend-protocol: GRPCS" in m
        for m in messages(translation, "web")
    )
    assert only_backend(translation).tls is None
    # Client certificates on an Ingress without TLS: reported (and 403, see above).
    translation = annotated({"xds-ingress.io/client-ca-secret": "clients"})
    assert any("has no spec.tls" in m for m in messages(translation, "web"))
