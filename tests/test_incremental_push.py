"""A push costs what it changes: derived snapshots and streams that compare only that.

A snapshot derived from its predecessor (the EndpointSlice fast path, or a
rebuild that reuses the previous snapshot's resources) must be
indistinguishable from one built from scratch: same versions, and every
stream sent exactly what differs from what its Envoy holds, however many
publishes it fell behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf.message import Message
from test_endpoint_fast_path import (
    NAMESPACE,
    SETTINGS,
    endpoint_addresses,
    endpoint_slice,
    full_translation,
    ingress,
    service,
)

from xds_ingress import ir
from xds_ingress.cache import (
    DEFAULT_GROUP,
    Resource,
    Snapshot,
    SnapshotCache,
    TypeSnapshot,
    build_snapshot,
    diff,
    make_resource,
)
from xds_ingress.pipeline import Debounce, Pipeline
from xds_ingress.resources import types
from xds_ingress.server.services import XdsServer
from xds_ingress.sources.objects import parse_object
from xds_ingress.store import Store, StoreView
from xds_ingress.translate import translate
from xds_ingress.translate.endpoint_refresh import StoreTranslator

NODE = base_pb2.Node(id="envoy-incremental", cluster="edge")
TIMEOUT = 5.0


def assignment(name: str, port: int) -> endpoint_pb2.ClusterLoadAssignment:
    message = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    address = message.endpoints.add().lb_endpoints.add().endpoint.address.socket_address
    address.address, address.port_value = "127.0.0.1", port
    return message


def cluster(name: str) -> cluster_pb2.Cluster:
    message = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    message.eds_cluster_config.service_name = name
    message.eds_cluster_config.eds_config.ads.SetInParent()
    return message


def assignments(ports: dict[str, int]) -> dict[str, Resource]:
    return {
        name: make_resource(name, types.ENDPOINT, assignment(name, port))
        for name, port in ports.items()
    }


def edit(rng: random.Random, ports: dict[str, int], step: int) -> set[str]:
    """Change, add and remove a few entries of `ports`; the names touched."""
    touched: set[str] = set()
    names = sorted(ports)
    for name in rng.sample(names, k=min(3, len(names))):
        ports[name] = rng.randrange(1, 60000)
        touched.add(name)
    if names and rng.random() < 0.5:
        gone = rng.choice(names)
        del ports[gone]
        touched.add(gone)
    if rng.random() < 0.5:
        born = f"new-{step}"
        ports[born] = rng.randrange(1, 60000)
        touched.add(born)
    # Sometimes a name is "touched" without a change: derive must see through it.
    touched.add(rng.choice(sorted(ports)))
    return touched


def test_a_derived_type_has_the_version_of_one_built_from_scratch() -> None:
    rng = random.Random(7)
    ports = {f"svc-{index}": 1000 + index for index in range(60)}
    current = TypeSnapshot(type_url=types.ENDPOINT, resources=assignments(ports))
    history: list[tuple[str, dict[str, str]]] = []
    for step in range(30):
        history.append((current.version, {n: r.version for n, r in current.resources.items()}))
        touched = edit(rng, ports, step)
        resources = dict(current.resources)
        for name in touched:
            if name in ports:
                resources[name] = make_resource(name, types.ENDPOINT, assignment(name, ports[name]))
            else:
                resources.pop(name, None)
        derived = current.derive(resources, touched)
        scratch = TypeSnapshot(type_url=types.ENDPOINT, resources=assignments(ports))
        assert derived.version == scratch.version
        assert derived == scratch
        # What it says may differ from an ancestor covers every real
        # difference; it always knows its parent, and may forget older ones
        # (a long or large history is not worth keeping).
        now = {n: r.version for n, r in derived.resources.items()}
        for back, (version, then) in enumerate(reversed(history)):
            names = derived.changed_since(version)
            if names is None:
                assert back > 0
                continue
            really = {n for n in then.keys() | now.keys() if then.get(n) != now.get(n)}
            assert really <= names
        assert derived.changed_since(derived.version) == frozenset()
        assert derived.changed_since("not-a-version") is None
        current = derived


def test_a_rebuild_reuses_what_the_builder_reused_and_versions_as_from_scratch() -> None:
    shared = {name: assignment(name, port) for name, port in (("a", 1), ("b", 2), ("c", 3))}
    clusters: dict[str, Message] = {name: cluster(name) for name in shared}
    first = build_snapshot({types.CLUSTER: clusters, types.ENDPOINT: dict(shared)})
    # The builder hands back the very same message objects for what did not
    # change, new ones for what did.
    changed = {**shared, "b": assignment("b", 20), "d": assignment("d", 4)}
    del changed["c"]
    clusters_after = {**clusters, "d": cluster("d")}
    del clusters_after["c"]
    second = build_snapshot(
        {types.CLUSTER: clusters_after, types.ENDPOINT: changed}, previous=first
    )
    scratch = build_snapshot({types.CLUSTER: clusters_after, types.ENDPOINT: changed})
    assert second.version == scratch.version
    for type_url in (types.CLUSTER, types.ENDPOINT):
        assert second.of_type(type_url).version == scratch.of_type(type_url).version
    endpoints = second.of_type(types.ENDPOINT)
    assert endpoints.resources["a"] is first.of_type(types.ENDPOINT).resources["a"]
    assert endpoints.changed_since(first.of_type(types.ENDPOINT).version) == frozenset("bcd")
    assert [(d.type_url, d.added, d.changed, d.removed) for d in diff(first, second)] == [
        (d.type_url, d.added, d.changed, d.removed) for d in diff(first, scratch)
    ]
    # Nothing changed: the very TypeSnapshot, and the serialised response it holds.
    third = build_snapshot(
        {types.CLUSTER: clusters_after, types.ENDPOINT: changed}, previous=second
    )
    assert third.of_type(types.ENDPOINT) is endpoints
    assert third.version == second.version


class Client:
    """One delta xDS stream played by the test, holding what Envoy would."""

    def __init__(self, call: grpc.aio.StreamStreamCall) -> None:  # type: ignore[type-arg]
        self.call = call
        self.received: asyncio.Queue[discovery_pb2.DeltaDiscoveryResponse] = asyncio.Queue()
        self.holds: dict[str, dict[str, str]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for response in self.call:
            await self.received.put(response)

    async def send(self, request: discovery_pb2.DeltaDiscoveryRequest) -> None:
        await self.call.write(request)

    def apply(self, response: discovery_pb2.DeltaDiscoveryResponse) -> None:
        """Hold what `response` brings; every resource in it must be news."""
        held = self.holds.setdefault(response.type_url, {})
        for resource in response.resources:
            assert held.get(resource.name) != resource.version, (
                f"{resource.name} resent at the version the client holds"
            )
            held[resource.name] = resource.version
        for name in response.removed_resources:
            assert name in held, f"{name} removed but never sent"
            del held[name]

    async def ack(self, response: discovery_pb2.DeltaDiscoveryResponse) -> None:
        await self.send(
            discovery_pb2.DeltaDiscoveryRequest(
                type_url=response.type_url, response_nonce=response.nonce
            )
        )

    def close(self) -> None:
        self.call.cancel()
        self.reader.cancel()


@pytest.fixture
async def xds() -> AsyncIterator[tuple[SnapshotCache, grpc.aio.Channel]]:
    cache = SnapshotCache()
    xds_server = XdsServer(cache=cache)
    server = grpc.aio.server()
    xds_server.register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield cache, channel
    await channel.close(grace=None)
    await server.stop(grace=None)


def with_endpoints(snapshot: Snapshot, ports: dict[str, int], touched: set[str]) -> Snapshot:
    """The fast path's patch: EDS derived from the published one."""
    before = snapshot.of_type(types.ENDPOINT)
    resources = dict(before.resources)
    for name in touched:
        if name in ports:
            resources[name] = make_resource(name, types.ENDPOINT, assignment(name, ports[name]))
        else:
            resources.pop(name, None)
    return Snapshot(types={**snapshot.types, types.ENDPOINT: before.derive(resources, touched)})


def held_by_snapshot(snapshot: Snapshot, type_url: str, names: set[str] | None) -> dict[str, str]:
    return {
        name: resource.version
        for name, resource in snapshot.of_type(type_url).resources.items()
        if names is None or name in names
    }


async def settle(client: Client) -> None:
    """Take and ACK responses until the stream has nothing more to say."""
    for _ in range(100):
        try:
            response = await asyncio.wait_for(client.received.get(), 0.3)
        except TimeoutError:
            return
        client.apply(response)
        await client.ack(response)
    raise AssertionError("the stream never went quiet")


async def test_delta_streams_get_exactly_what_differs_however_far_behind(xds) -> None:  # type: ignore[no-untyped-def]
    cache, channel = xds
    rng = random.Random(11)
    ports = {f"svc-{index}": 2000 + index for index in range(40)}
    snapshot = build_snapshot(
        {
            types.CLUSTER: {f"svc-{index}": cluster(f"svc-{index}") for index in range(40)},
            types.ENDPOINT: {name: assignment(name, port) for name, port in ports.items()},
            types.LISTENER: {"http": listener_pb2.Listener(name="http")},
            types.ROUTE: {"http": route_pb2.RouteConfiguration(name="http")},
        }
    )
    cache.set_snapshot("edge", snapshot, check=False)
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    # One client takes every endpoint by name (as Envoy does), one a few.
    everything = Client(stub.DeltaAggregatedResources())
    some = Client(stub.DeltaAggregatedResources())
    chosen = {"svc-1", "svc-2", "svc-3", "new-2", "new-5", "new-9"}
    subscriptions = (
        (everything, set(ports) | {f"new-{step}" for step in range(40)}),
        (some, chosen),
    )
    for client, names in subscriptions:
        await client.send(
            discovery_pb2.DeltaDiscoveryRequest(
                node=NODE, type_url=types.ENDPOINT, resource_names_subscribe=sorted(names)
            )
        )
        await settle(client)
    for step in range(40):
        touched = edit(rng, ports, step)
        snapshot = with_endpoints(snapshot, ports, touched)
        assert cache.set_snapshot("edge", snapshot, check=False)
        # The clients lag several publishes before they read, once more
        # than a snapshot remembers (8).
        if step in (0, 3, 9, 25, 29, 39):
            for client, names in subscriptions:
                await settle(client)
                assert client.holds[types.ENDPOINT] == held_by_snapshot(
                    snapshot, types.ENDPOINT, names
                )
    for client, _ in subscriptions:
        client.close()


async def test_sotw_streams_by_name_hear_only_of_changes_to_their_names(xds) -> None:  # type: ignore[no-untyped-def]
    cache, channel = xds
    rng = random.Random(5)
    ports = {f"svc-{index}": 3000 + index for index in range(30)}
    snapshot = build_snapshot(
        {
            types.CLUSTER: {name: cluster(name) for name in ports},
            types.ENDPOINT: {name: assignment(name, port) for name, port in ports.items()},
        }
    )
    cache.set_snapshot("edge", snapshot, check=False)
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    call = stub.StreamAggregatedResources()
    received: asyncio.Queue[discovery_pb2.DiscoveryResponse] = asyncio.Queue()

    async def read() -> None:
        async for response in call:
            await received.put(response)

    reader = asyncio.create_task(read())
    chosen = {"svc-4", "svc-5", "new-3", "new-12"}
    await call.write(
        discovery_pb2.DiscoveryRequest(
            node=NODE, type_url=types.ENDPOINT, resource_names=sorted(chosen)
        )
    )
    holds: dict[str, str] = {}
    last_version = ""

    async def settle() -> int:
        """Take and ACK responses until quiet; how many there were."""
        nonlocal holds, last_version
        count = 0
        for _ in range(100):
            try:
                response = await asyncio.wait_for(received.get(), 0.25)
            except TimeoutError:
                return count
            count += 1
            assert response.version_info != last_version, "a response with nothing new"
            last_version = response.version_info
            holds = {}
            for packed in response.resources:
                message = endpoint_pb2.ClusterLoadAssignment()
                packed.Unpack(message)
                holds[message.cluster_name] = message.SerializeToString(deterministic=True)
            await call.write(
                discovery_pb2.DiscoveryRequest(
                    type_url=types.ENDPOINT,
                    resource_names=sorted(chosen),
                    version_info=response.version_info,
                    response_nonce=response.nonce,
                )
            )
        raise AssertionError("the stream never went quiet")

    assert await settle() == 1
    quiet_steps = 0
    for step in range(24):
        before = snapshot.of_type(types.ENDPOINT).versions
        touched = edit(rng, ports, step)
        snapshot = with_endpoints(snapshot, ports, touched)
        assert cache.set_snapshot("edge", snapshot, check=False)
        after = snapshot.of_type(types.ENDPOINT).versions
        mine_changed = any(before.get(name) != after.get(name) for name in chosen)
        # One response when its names changed; none when only others' did.
        assert await settle() == (1 if mine_changed else 0)
        quiet_steps += not mine_changed
        assert holds == {
            name: assignment(name, ports[name]).SerializeToString(deterministic=True)
            for name in chosen
            if name in ports
        }
    assert quiet_steps > 5
    call.cancel()
    reader.cancel()


def two_port_service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "ports": [
                {"name": "grpc", "port": 50051, "appProtocol": "kubernetes.io/h2c"},
                {"name": "admin", "port": 50052, "appProtocol": "kubernetes.io/h2c"},
            ]
        },
    }


def two_port_slice(name: str, *, service: str, addresses: list[str]) -> dict[str, Any]:
    document = endpoint_slice(name, service=service, addresses=addresses)
    document["ports"] = [{"name": "grpc", "port": 9000}, {"name": "admin", "port": 9001}]
    return document


def routed(name: str, *, service: str, port: int) -> dict[str, Any]:
    document = ingress(name, host=f"{name}.example.com", service=service)
    path = document["spec"]["rules"][0]["http"]["paths"][0]
    path["backend"]["service"]["port"]["number"] = port
    return document


async def test_fast_path_and_rebuilds_interleaved_match_a_translation_from_scratch() -> None:
    """One Service feeding two Backends; slice changes between full rebuilds."""
    store = Store()

    def apply(document: dict[str, Any]) -> None:
        store.apply(parse_object(document), origin="test")

    apply(two_port_service("multi"))
    apply(routed("grpc", service="multi", port=50051))
    apply(routed("admin", service="multi", port=50052))
    apply(two_port_slice("multi-a", service="multi", addresses=["10.0.0.1"]))
    translations: list[int] = []

    def counted(view: StoreView) -> ir.Translation:
        translations.append(1)
        return translate(view, settings=SETTINGS)

    translator = StoreTranslator(view=store.view, translate=counted)
    cache = SnapshotCache()
    pipeline = Pipeline(
        translate=translator.full,
        refresh_endpoints=translator.endpoints,
        cache=cache,
        group=DEFAULT_GROUP,
        debounce=Debounce(holdoff_seconds=0.01, max_holdoff_seconds=0.05),
        freeze_heap=False,
    )
    store.subscribe(pipeline.changed)
    synced = asyncio.Event()
    synced.set()
    task = asyncio.create_task(pipeline.run(synced=synced))

    async def settle() -> Snapshot:
        await asyncio.wait_for(pipeline.first_published.wait(), TIMEOUT)
        builds = -1
        for _ in range(200):
            if builds == pipeline.report.builds:
                break
            builds = pipeline.report.builds
            await asyncio.sleep(0.05)
        snapshot = cache.current(DEFAULT_GROUP)
        assert snapshot is not None
        assert snapshot.version == full_translation(store.view()).version
        return snapshot

    try:
        await settle()
        apply(two_port_slice("multi-a", service="multi", addresses=["10.0.0.1", "10.0.0.2"]))
        snapshot = await settle()
        for cluster_name in ("shop/multi:50051", "shop/multi:50052"):
            assert endpoint_addresses(snapshot, cluster_name) == ["10.0.0.1", "10.0.0.2"]
        assert len(translations) == 1, "the slice change was translated in full"
        # A new Service ahead of it in every order: a full rebuild re-indexes.
        apply(service("early"))
        apply(routed("early", service="early", port=50051))
        apply(endpoint_slice("early-a", service="early", addresses=["10.0.1.1"]))
        await settle()
        assert len(translations) == 2
        apply(two_port_slice("multi-a", service="multi", addresses=["10.0.0.3"]))
        apply(endpoint_slice("early-a", service="early", addresses=["10.0.1.2"]))
        snapshot = await settle()
        assert len(translations) == 2, "the slice changes were translated in full"
        assert endpoint_addresses(snapshot, "shop/multi:50052") == ["10.0.0.3"]
        assert endpoint_addresses(snapshot, "shop/early:50051") == ["10.0.1.2"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
