"""ListNodes says when each response was sent and when the Envoy ACKed it.

A real Envoy (delta and state of the world) against the control plane,
read with a grpcio client of the admin API. These timestamps are what the
fan-out benchmark times a push with, so they must be there, be ordered
(sent, then ACKed), move when a push is ACKed and stay put on a NACK.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from envoy.config.cluster.v3 import cluster_pb2
from ingress_harness import Ingress, endpoint_slice, ingress, rule, service
from peers import free_port, wait_until

from xds_ingress.admin.v1 import admin_pb2, admin_pb2_grpc
from xds_ingress.cache import DEFAULT_GROUP, make_resource, snapshot_from_resources
from xds_ingress.resources import types

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(60)]

CLUSTER_NAME = "demo/greeter-a:50051"


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=["delta", "sotw"])
async def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Ingress]:
    under_test = Ingress(
        workdir=tmp_path_factory.mktemp("ack-times"), delta=request.param == "delta"
    )
    under_test.config.write(
        "services.yaml",
        service("greeter-a"),
        endpoint_slice("greeter-a", free_port()),
        service("greeter-b"),
        endpoint_slice("greeter-b", free_port()),
    )
    under_test.config.write(
        "ingress.yaml", ingress("main", [rule("a.example.com", ("/", "Prefix", "greeter-a"))])
    )
    try:
        await under_test.start_control_plane()
        await (await under_test.start_envoy()).wait_live()
        await wait_until(lambda: _settled(under_test), message="Envoy ACKs every type")
        yield under_test
    finally:
        await under_test.stop()


async def _types(live: Ingress) -> dict[str, admin_pb2.TypeStatus]:
    # The admin API is served on the xDS port too (tests/test_admin_api.py).
    async with grpc.aio.insecure_channel(f"127.0.0.1:{live.xds_port}") as channel:
        reply: admin_pb2.ListNodesResponse = await admin_pb2_grpc.AdminStub(channel).ListNodes(
            admin_pb2.ListNodesRequest(), timeout=5.0
        )
    (node,) = reply.nodes
    return {status.type_url: status for status in node.types}


async def _settled(live: Ingress) -> bool:
    statuses = await _types(live)
    return types.ROUTE in statuses and all(
        s.sent_version and s.acked_version == s.sent_version for s in statuses.values()
    )


def _seconds(status: admin_pb2.TypeStatus | admin_pb2.Nack, field: str) -> float:
    assert status.HasField(field), f"{status}: no {field}"
    stamp = getattr(status, field)
    return float(stamp.seconds + stamp.nanos / 1e9)


async def test_every_acked_type_has_its_send_and_ack_times_in_order(live: Ingress) -> None:
    now = time.time()
    statuses = await _types(live)
    assert {types.CLUSTER, types.ENDPOINT, types.LISTENER, types.ROUTE} <= set(statuses)
    for status in statuses.values():
        sent = _seconds(status, "sent_at")
        acked = _seconds(status, "acked_at")
        # Wall clock of this machine: within the test's life, ACK after send.
        assert now - 60 < sent <= acked <= now, status.type_url


async def test_a_pushed_change_moves_the_times_to_after_the_write(live: Ingress) -> None:
    before = await _types(live)
    written = time.time()
    live.config.write(
        "ingress.yaml",
        ingress(
            "main",
            [
                rule("a.example.com", ("/", "Prefix", "greeter-a")),
                rule("b.example.com", ("/", "Prefix", "greeter-b")),
            ],
        ),
    )

    async def routes_acked() -> bool:
        routes = (await _types(live))[types.ROUTE]
        return routes.acked_version == routes.sent_version != before[types.ROUTE].acked_version

    await wait_until(routes_acked, message="the new routes ACKed")
    after = await _types(live)
    routes = after[types.ROUTE]
    assert written < _seconds(routes, "sent_at") <= _seconds(routes, "acked_at") <= time.time()
    # Make before break: the new cluster, then its assignment, and the routes
    # that name it only once Envoy has ACKed both (server/warming.py).
    clusters = after[types.CLUSTER]
    endpoints = after[types.ENDPOINT]
    assert written < _seconds(clusters, "sent_at") <= _seconds(clusters, "acked_at")
    assert _seconds(clusters, "sent_at") <= _seconds(endpoints, "sent_at")
    assert _seconds(endpoints, "sent_at") <= _seconds(endpoints, "acked_at")
    assert _seconds(clusters, "acked_at") <= _seconds(routes, "sent_at")
    assert _seconds(endpoints, "acked_at") <= _seconds(routes, "sent_at")


async def test_a_nack_leaves_the_ack_time_where_it_was(live: Ingress) -> None:
    """Runs last: it replaces the snapshot, and restores it at the end."""
    control_plane = live.control_plane
    assert control_plane is not None
    await wait_until(lambda: _settled(live), message="Envoy ACKs every type")
    good = control_plane.cache.current(DEFAULT_GROUP)
    assert good is not None
    acked_before = _seconds((await _types(live))[types.CLUSTER], "acked_at")
    resources = {url: dict(good.of_type(url).resources) for url in good.types}
    bad_cluster = cluster_pb2.Cluster()
    bad_cluster.CopyFrom(resources[types.CLUSTER][CLUSTER_NAME].message)
    bad_cluster.connect_timeout.seconds = -1  # Envoy's validation rejects it
    resources[types.CLUSTER][CLUSTER_NAME] = make_resource(CLUSTER_NAME, types.CLUSTER, bad_cluster)
    control_plane.cache.set_snapshot(DEFAULT_GROUP, snapshot_from_resources(resources))
    try:

        async def nacked() -> bool:
            return bool((await _types(live))[types.CLUSTER].HasField("last_nack"))

        await wait_until(nacked, message="the NACK in ListNodes")
        clusters = (await _types(live))[types.CLUSTER]
        assert _seconds(clusters, "sent_at") > acked_before
        if live.delta:
            # Delta resends nothing it was NACKed: the ACK time stays that of
            # the last response Envoy accepted.
            assert clusters.sent_version != clusters.acked_version
            assert _seconds(clusters, "acked_at") == acked_before
        else:
            # State of the world resends the type holding the rejected
            # cluster back; the time moves only with the ACK of that resend.
            async def resend_acked() -> bool:
                status = (await _types(live))[types.CLUSTER]
                return bool(status.held_back) and status.acked_version == status.sent_version

            await wait_until(resend_acked, message="the resend without the bad cluster ACKed")
            clusters = (await _types(live))[types.CLUSTER]
            nack_at = _seconds(clusters.last_nack, "at")
            assert nack_at <= _seconds(clusters, "sent_at") <= _seconds(clusters, "acked_at")
    finally:
        control_plane.cache.set_snapshot(DEFAULT_GROUP, good)
    await wait_until(lambda: _settled(live), message="the good cluster ACKed again")
    clusters = (await _types(live))[types.CLUSTER]
    assert _seconds(clusters, "sent_at") <= _seconds(clusters, "acked_at")
    assert _seconds(clusters, "acked_at") > acked_before
