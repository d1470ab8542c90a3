"""A real Envoy, configured only by our control plane, routing real gRPC calls.

Every test runs in both xDS variants: incremental (delta) and state of the world.
"""

from __future__ import annotations

import logging

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from ingress_harness import (
    Ingress,
    answers_with,
    endpoint_slice,
    ingress,
    routes_to,
    rule,
    say_hello,
    service,
)
from peers import wait_until

from xds_ingress.cache import DEFAULT_GROUP, make_resource, snapshot_from_resources
from xds_ingress.demo.backend import GreeterBackend
from xds_ingress.resources import types

pytestmark = pytest.mark.timeout(120)


def write_services(under_test: Ingress, backends: dict[str, GreeterBackend]) -> None:
    under_test.config.write(
        "services.yaml",
        *(service(f"greeter-{name}") for name in ("a", "b")),
        endpoint_slice("greeter-a", backends["a"].port),
        endpoint_slice("greeter-b", backends["b"].port),
    )


async def test_calls_reach_the_backend_the_ingress_names_by_host_and_path(
    ingress_under_test: Ingress, backends: dict[str, GreeterBackend]
) -> None:
    write_services(ingress_under_test, backends)
    ingress_under_test.config.write(
        "ingress.yaml",
        ingress(
            "hosts",
            [
                rule("a.example.com", ("/", "Prefix", "greeter-a")),
                rule("b.example.com", ("/", "Prefix", "greeter-b")),
                rule(
                    "paths.example.com",
                    ("/xds_ingress.demo.v1.Greeter/SayHello", "Exact", "greeter-b"),
                    ("/xds_ingress.demo.v1.Greeter", "Prefix", "greeter-a"),
                ),
            ],
        ),
    )
    await ingress_under_test.start()
    await routes_to(ingress_under_test, "a.example.com", "a")
    await routes_to(ingress_under_test, "b.example.com", "b")
    # By path on one host: the exact method goes to b, the rest of the service to a.
    await routes_to(ingress_under_test, "paths.example.com", "b")
    await routes_to(ingress_under_test, "paths.example.com", "a", method="SayHelloServerStream")
    # A host no rule names is not routed (Envoy answers 404 → UNIMPLEMENTED).
    result = await say_hello(ingress_under_test.target, authority="nobody.example.com")
    assert result.code is grpc.StatusCode.UNIMPLEMENTED


async def test_editing_the_folder_moves_traffic_without_restarts(
    ingress_under_test: Ingress, backends: dict[str, GreeterBackend]
) -> None:
    write_services(ingress_under_test, backends)
    ingress_under_test.config.write(
        "ingress.yaml", ingress("main", [rule("a.example.com", ("/", "Prefix", "greeter-a"))])
    )
    await ingress_under_test.start()
    envoy = ingress_under_test.envoy
    assert envoy is not None and envoy.process is not None
    envoy_pid = envoy.process.pid
    await routes_to(ingress_under_test, "a.example.com", "a")
    result = await say_hello(ingress_under_test.target, authority="new.example.com")
    assert result.code is grpc.StatusCode.UNIMPLEMENTED

    # A new route starts working.
    ingress_under_test.config.write(
        "new.yaml", ingress("new", [rule("new.example.com", ("/", "Prefix", "greeter-b"))])
    )
    await routes_to(ingress_under_test, "new.example.com", "b")

    # A removed route stops.
    ingress_under_test.config.remove("new.yaml")
    await answers_with(ingress_under_test, "new.example.com", grpc.StatusCode.UNIMPLEMENTED)
    await routes_to(ingress_under_test, "a.example.com", "a")

    # An endpoint change is followed: greeter-a's pod moves to backend c.
    ingress_under_test.config.write(
        "services.yaml",
        service("greeter-a"),
        service("greeter-b"),
        endpoint_slice("greeter-a", backends["c"].port),
        endpoint_slice("greeter-b", backends["b"].port),
    )
    await routes_to(ingress_under_test, "a.example.com", "c")
    # No endpoint ready: Envoy has nowhere to send the call.
    ingress_under_test.config.write(
        "services.yaml",
        service("greeter-a"),
        service("greeter-b"),
        endpoint_slice("greeter-a", backends["c"].port, ready=False),
        endpoint_slice("greeter-b", backends["b"].port),
    )
    await answers_with(ingress_under_test, "a.example.com", grpc.StatusCode.UNAVAILABLE)
    assert envoy.process is not None and envoy.process.pid == envoy_pid, "Envoy was restarted"


async def test_a_restarted_envoy_resyncs(
    ingress_under_test: Ingress, backends: dict[str, GreeterBackend]
) -> None:
    write_services(ingress_under_test, backends)
    ingress_under_test.config.write(
        "ingress.yaml", ingress("main", [rule("a.example.com", ("/", "Prefix", "greeter-a"))])
    )
    await ingress_under_test.start()
    await routes_to(ingress_under_test, "a.example.com", "a")
    assert ingress_under_test.envoy is not None
    await ingress_under_test.envoy.stop()
    # A change made while Envoy is down reaches the new Envoy.
    ingress_under_test.config.write(
        "ingress.yaml", ingress("main", [rule("a.example.com", ("/", "Prefix", "greeter-b"))])
    )
    envoy = await ingress_under_test.start_envoy()
    await envoy.wait_live()
    await routes_to(ingress_under_test, "a.example.com", "b")


async def test_envoys_resync_a_restarted_control_plane(
    ingress_under_test: Ingress, backends: dict[str, GreeterBackend]
) -> None:
    write_services(ingress_under_test, backends)
    ingress_under_test.config.write(
        "ingress.yaml", ingress("main", [rule("a.example.com", ("/", "Prefix", "greeter-a"))])
    )
    await ingress_under_test.start()
    await routes_to(ingress_under_test, "a.example.com", "a")
    await ingress_under_test.stop_control_plane()
    # Envoy keeps serving its last configuration while the control plane is down.
    for _ in range(5):
        result = await say_hello(ingress_under_test.target, authority="a.example.com")
        assert result.backend == "a"
    control_plane = await ingress_under_test.start_control_plane()

    async def reconnected() -> bool:
        return any(status.node_id == "test-envoy" for status in control_plane.xds.registry)

    await wait_until(reconnected, timeout=30, message="Envoy reconnected")
    ingress_under_test.config.write(
        "ingress.yaml", ingress("main", [rule("a.example.com", ("/", "Prefix", "greeter-b"))])
    )
    await routes_to(ingress_under_test, "a.example.com", "b")


async def test_a_rejected_resource_leaves_traffic_on_the_last_good_config(
    ingress_under_test: Ingress,
    backends: dict[str, GreeterBackend],
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_services(ingress_under_test, backends)
    ingress_under_test.config.write(
        "ingress.yaml", ingress("main", [rule("a.example.com", ("/", "Prefix", "greeter-a"))])
    )
    control_plane = await ingress_under_test.start_control_plane()
    await (await ingress_under_test.start_envoy()).wait_live()
    await routes_to(ingress_under_test, "a.example.com", "a")

    # Inject a cluster Envoy's validation rejects (a negative connect timeout)
    # in place of greeter-a's.
    good = control_plane.cache.current(DEFAULT_GROUP)
    assert good is not None
    resources = {url: dict(good.of_type(url).resources) for url in good.types}
    name = "demo/greeter-a:50051"
    bad_cluster = cluster_pb2.Cluster()
    bad_cluster.CopyFrom(resources[types.CLUSTER][name].message)
    bad_cluster.connect_timeout.seconds = -1
    resources[types.CLUSTER][name] = make_resource(name, types.CLUSTER, bad_cluster)
    caplog.set_level(logging.WARNING, logger="xds_ingress")
    control_plane.cache.set_snapshot(DEFAULT_GROUP, snapshot_from_resources(resources))

    async def nacked() -> bool:
        return control_plane.xds.metrics.nack_count(types.CLUSTER) >= 1

    await wait_until(nacked, timeout=15, message="a NACK for the bad cluster")
    # One log line with Envoy's own reason, and the NACK kept for inspection.
    nack_lines = [r.getMessage() for r in caplog.records if "NACK" in r.getMessage()]
    assert len(nack_lines) == 1, nack_lines
    assert "Expected positive duration" in nack_lines[0]
    assert "\n" not in nack_lines[0]
    (status,) = [s for s in control_plane.xds.registry if s.node_id == "test-envoy"]
    nack = status.types[types.CLUSTER].last_nack
    assert nack is not None and "Expected positive duration" in nack.message
    for _ in range(5):
        result = await say_hello(ingress_under_test.target, authority="a.example.com")
        assert result.backend == "a"
    # The rejected version is not resent in a loop.
    pushes_after_nack = _pushes(control_plane)
    for _ in range(5):
        await say_hello(ingress_under_test.target, authority="a.example.com")
    assert _pushes(control_plane) == pushes_after_nack
    assert control_plane.xds.metrics.nack_count(types.CLUSTER) == 1

    # A fixed configuration is taken again.
    ingress_under_test.config.write(
        "ingress.yaml", ingress("main", [rule("a.example.com", ("/", "Prefix", "greeter-b"))])
    )
    await routes_to(ingress_under_test, "a.example.com", "b")


def _pushes(control_plane: object) -> float:
    metrics = control_plane.xds.metrics  # type: ignore[attr-defined]
    return sum(
        sample.value
        for metric in metrics.pushes.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


async def test_with_no_ingress_the_listener_opens_and_answers_not_found(
    ingress_under_test: Ingress, backends: dict[str, GreeterBackend]
) -> None:
    # A fresh install: Services but no Ingress, so no clusters at all. Envoy
    # must not sit out its 15 s initial fetch timeout waiting for a CDS reply.
    write_services(ingress_under_test, backends)
    await ingress_under_test.start_control_plane()
    envoy = await ingress_under_test.start_envoy()
    await envoy.wait_live(within_seconds=5)
    await answers_with(ingress_under_test, "a.example.com", grpc.StatusCode.UNIMPLEMENTED)
