"""Prometheus metrics as an operator scrapes them, with a real Envoy on the other end.

Latency histograms are checked for what makes them useful: they count the
pushes a change causes (not a stream's first answer), and the time they
measure starts at the source change, so it includes the debounce holdoff.
"""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from ingress_harness import Ingress, endpoint_slice, ingress, routes_to, rule, service
from peers import free_port, wait_until
from prometheus_client.parser import text_string_to_metric_families

from xds_ingress.demo.backend import GreeterBackend

pytestmark = pytest.mark.timeout(60)

TYPES = ("Cluster", "ClusterLoadAssignment", "Listener", "RouteConfiguration")
# The harness's holdoff (ingress_harness.Ingress.start_control_plane).
HOLDOFF_SECONDS = 0.02

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text: str = reply.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_streams_by_type_and_push_latencies(
    ingress_under_test: Ingress, backends: dict[str, GreeterBackend]
) -> None:
    kind = "delta" if ingress_under_test.delta else "sotw"
    ingress_under_test.metrics_port = port = free_port()
    config = ingress_under_test.config
    config.write(
        "services.yaml",
        service("greeter-a"),
        service("greeter-b"),
        endpoint_slice("greeter-a", backends["a"].port),
        endpoint_slice("greeter-b", backends["b"].port),
    )
    config.write(
        "ingress.yaml", ingress("main", [rule("a.example.com", ("/", "Prefix", "greeter-a"))])
    )
    await ingress_under_test.start()
    await routes_to(ingress_under_test, "a.example.com", "a")

    async def acked_every_type() -> bool:
        samples = await asyncio.to_thread(scrape, port)
        return all(
            value(samples, "xds_ingress_sent_to_ack_seconds_count", type=t, kind=kind) >= 1
            for t in TYPES
        )

    await wait_until(acked_every_type, timeout=15, message="every type's first response ACKed")
    before = await asyncio.to_thread(scrape, port)
    assert value(before, "xds_ingress_streams", kind=kind) == 1
    for type_name in TYPES:
        # One ADS stream, counted once under each type it asked for.
        assert value(before, "xds_ingress_type_streams", type=type_name, kind=kind) == 1
        # First answers are not pushes caused by a change.
        assert value(
            before, "xds_ingress_change_to_sent_seconds_count", type=type_name, kind=kind
        ) == (0)
    ack_seconds = value(before, "xds_ingress_sent_to_ack_seconds_sum", type="Cluster", kind=kind)
    assert 0 < ack_seconds < 10

    # A change of routes (and so of clusters): one push of route configs,
    # timed from the change.
    config.write(
        "ingress.yaml", ingress("main", [rule("a.example.com", ("/", "Prefix", "greeter-b"))])
    )
    await routes_to(ingress_under_test, "a.example.com", "b")
    after = await asyncio.to_thread(scrape, port)
    route = {"type": "RouteConfiguration", "kind": kind}
    pushes = value(after, "xds_ingress_change_to_sent_seconds_count", **route)
    assert pushes == 1
    latency = value(after, "xds_ingress_change_to_sent_seconds_sum", **route)
    # From the change seen to sent; a lone change skips the holdoff.
    assert 0 < latency < 1
    assert value(after, "xds_ingress_change_to_sent_seconds_bucket", le="5.0", **route) == 1
    # Listeners did not change: no push, nothing timed.
    assert value(after, "xds_ingress_change_to_sent_seconds_count", type="Listener", kind=kind) == 0

    # Envoy leaves: its stream no longer counts under any type.
    assert ingress_under_test.envoy is not None
    await ingress_under_test.envoy.stop()

    async def gone() -> bool:
        samples = await asyncio.to_thread(scrape, port)
        return all(
            value(samples, "xds_ingress_type_streams", type=t, kind=kind) == 0 for t in TYPES
        ) and (value(samples, "xds_ingress_streams", kind=kind) == 0)

    await wait_until(gone, timeout=15, message="the stream gone from the gauges")
