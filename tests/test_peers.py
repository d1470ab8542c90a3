"""The test peers themselves work: demo backends, a real Envoy, grpcurl.

Envoy here runs a static bootstrap written by hand, with no control plane,
so a failure in this file points at the peers or the machine, not at our
xDS code.
"""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from peers import (
    CALL_SHAPES,
    LOOPBACK,
    BackendFactory,
    CallShape,
    EnvoyFactory,
    EnvoyProcess,
    free_port,
    greet,
    run_grpcurl,
    say_hello,
)

from xds_ingress.demo.backend import GREETER_SERVICE


def static_bootstrap(*, listener_port: int, backend_port: int) -> dict[str, Any]:
    """One listener routing every gRPC call to one h2c backend; no xDS."""
    http_connection_manager = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
        "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        # AUTO: gRPC clients speak h2c with prior knowledge; curl may not.
        "codec_type": "AUTO",
        "route_config": {
            "name": "local",
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "greeter-a"}}],
                }
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    return {
        "node": {"id": "test-peers", "cluster": "test"},
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress",
                    "address": {
                        "socket_address": {"address": LOOPBACK, "port_value": listener_port}
                    },
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": http_connection_manager,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "greeter-a",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    # gRPC needs HTTP/2 to the backend; Envoy defaults to HTTP/1.1.
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/"
                            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    "load_assignment": {
                        "cluster_name": "greeter-a",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": LOOPBACK,
                                                    "port_value": backend_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        },
    }


@pytest.fixture
async def envoy_to_a(
    backend_factory: BackendFactory, envoy_factory: EnvoyFactory
) -> tuple[EnvoyProcess, str]:
    """Backends a and b, and a LIVE Envoy that routes everything to a; (envoy, target)."""
    backend_a = await backend_factory("a")
    await backend_factory("b")
    listener_port = free_port()
    envoy = envoy_factory(
        static_bootstrap(listener_port=listener_port, backend_port=backend_a.port)
    )
    await envoy.wait_ready()
    return envoy, f"{LOOPBACK}:{listener_port}"


async def test_backend_answers_directly_with_its_name(backend_factory: BackendFactory) -> None:
    backend = await backend_factory("b")
    assert await say_hello(backend.target) == ("b", grpc.StatusCode.OK)


@pytest.mark.parametrize("shape", CALL_SHAPES)
async def test_every_call_shape_reaches_backend_a_through_envoy(
    envoy_to_a: tuple[EnvoyProcess, str], shape: CallShape
) -> None:
    _envoy, target = envoy_to_a
    call = await greet(target, shape=shape, names=("x", "y", "z"))
    assert call.code == grpc.StatusCode.OK, call.details
    assert call.backend == "a"
    if shape in ("server_stream", "bidi"):
        assert len(call.backends) == 3


async def test_envoy_admin_reports_the_static_config(
    envoy_to_a: tuple[EnvoyProcess, str],
) -> None:
    envoy, target = envoy_to_a
    assert await say_hello(target, authority="anything.example") == ("a", grpc.StatusCode.OK)

    dump = envoy.config_dump()
    kinds = {config["@type"].rsplit(".", 1)[-1] for config in dump["configs"]}
    assert {"ListenersConfigDump", "ClustersConfigDump", "EndpointsConfigDump"} <= kinds
    assert "greeter-a" in envoy.clusters()
    await envoy.wait_for(
        lambda: envoy.stat("cluster.greeter-a.upstream_rq_total") >= 1,
        message="greeter-a counted the call",
    )


async def test_envoy_restart_serves_again(envoy_to_a: tuple[EnvoyProcess, str]) -> None:
    envoy, target = envoy_to_a
    first_pid = envoy.pid
    await envoy.restart()
    await envoy.wait_ready()
    assert envoy.pid != first_pid
    assert await say_hello(target) == ("a", grpc.StatusCode.OK)
    assert envoy.log_text().count("=== start ") == 2


async def test_grpcurl_lists_services_by_reflection(backend_factory: BackendFactory) -> None:
    backend = await backend_factory("a")
    rc, out, err = await run_grpcurl(["-plaintext", backend.target, "list"])
    assert rc == 0, err
    services = out.split()
    assert GREETER_SERVICE == "xds_ingress.demo.v1.Greeter"
    assert {GREETER_SERVICE, "grpc.health.v1.Health"} <= set(services)


async def test_grpcurl_calls_backend_a_through_envoy(
    envoy_to_a: tuple[EnvoyProcess, str],
) -> None:
    _envoy, target = envoy_to_a
    # Reflection passes through Envoy like any other gRPC call.
    rc, out, err = await run_grpcurl(
        ["-plaintext", "-d", '{"name":"x"}', target, f"{GREETER_SERVICE}/SayHello"]
    )
    assert rc == 0, err
    assert json.loads(out) == {"message": "Hello, x!", "backend": "a"}


async def test_grpcurl_health_check(backend_factory: BackendFactory) -> None:
    backend = await backend_factory("a")
    rc, out, err = await run_grpcurl(["-plaintext", backend.target, "grpc.health.v1.Health/Check"])
    assert rc == 0, err
    assert json.loads(out) == {"status": "SERVING"}


async def test_two_envoys_run_side_by_side(
    backend_factory: BackendFactory, envoy_factory: EnvoyFactory
) -> None:
    backend = await backend_factory("a")
    ports = [free_port(), free_port()]
    envoys = [
        envoy_factory(static_bootstrap(listener_port=port, backend_port=backend.port))
        for port in ports
    ]
    for envoy in envoys:
        await envoy.wait_ready()
    assert envoys[0].base_id != envoys[1].base_id
    assert envoys[0].admin_port != envoys[1].admin_port
    for port in ports:
        assert await say_hello(f"{LOOPBACK}:{port}") == ("a", grpc.StatusCode.OK)


def test_ports_asked_for_before_any_is_bound_all_differ() -> None:
    """An Envoy's admin and listener ports are picked before Envoy binds either."""
    # 300 random draws from ~12.8k ports repeat one most of the time.
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
