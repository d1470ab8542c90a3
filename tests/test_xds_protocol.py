"""The xDS protocol as a client sees it, over a real gRPC connection.

Envoy itself is exercised in the end-to-end tests; here a grpc.aio client
plays Envoy so the protocol's corner cases (stale nonces, NACKs, delta
reconnects) can be driven exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import grpc
import pytest
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2, config_source_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf import any_pb2
from google.rpc import status_pb2
from peers import wait_until

from xds_ingress.cache import (
    InconsistentSnapshotError,
    SnapshotCache,
    build_snapshot,
    consistency_errors,
)
from xds_ingress.resources import types
from xds_ingress.server.services import XdsServer

NODE = base_pb2.Node(id="envoy-1", cluster="edge")
TIMEOUT = 5.0


def eds_cluster(name: str) -> cluster_pb2.Cluster:
    cluster = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.EDS)
    cluster.eds_cluster_config.service_name = name
    cluster.eds_cluster_config.eds_config.ads.SetInParent()
    return cluster


def endpoints(name: str, *ports: int) -> endpoint_pb2.ClusterLoadAssignment:
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=name)
    locality = assignment.endpoints.add()
    for port in ports:
        address = locality.lb_endpoints.add().endpoint.address.socket_address
        address.address, address.port_value = "127.0.0.1", port
    return assignment


def rds_listener(name: str, route_config: str) -> listener_pb2.Listener:
    hcm = hcm_pb2.HttpConnectionManager(stat_prefix=name)
    hcm.rds.route_config_name = route_config
    hcm.rds.config_source.ads.SetInParent()
    hcm.rds.config_source.resource_api_version = config_source_pb2.V3
    listener = listener_pb2.Listener(name=name)
    packed = any_pb2.Any()
    packed.Pack(hcm)
    network_filter = listener.filter_chains.add().filters.add()
    network_filter.name = "envoy.filters.network.http_connection_manager"
    network_filter.typed_config.CopyFrom(packed)
    return listener


def config(clusters: dict[str, tuple[int, ...]], *, routes: Iterable[str] = ("http",)):  # type: ignore[no-untyped-def]
    return build_snapshot(
        {
            types.CLUSTER: {name: eds_cluster(name) for name in clusters},
            types.ENDPOINT: {name: endpoints(name, *ports) for name, ports in clusters.items()},
            types.LISTENER: {route: rds_listener(route, route) for route in routes},
            types.ROUTE: {route: route_pb2.RouteConfiguration(name=route) for route in routes},
        }
    )


class Client:
    """One xDS stream driven by the test.

    Reads run in a task of their own: cancelling a grpc.aio read cancels
    the whole call, so a timed-out read must never be the call's own.
    """

    def __init__(self, call: grpc.aio.StreamStreamCall) -> None:  # type: ignore[type-arg]
        self.call = call
        self._received: asyncio.Queue[object] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for response in self.call:
            await self._received.put(response)

    async def send(self, request: object) -> None:
        await self.call.write(request)

    async def recv(self) -> object:
        return await asyncio.wait_for(self._received.get(), TIMEOUT)

    async def expect_silence(self, seconds: float = 0.3) -> None:
        await asyncio.sleep(seconds)
        assert self._received.empty(), self._received.get_nowait()

    def close(self) -> None:
        self.call.cancel()
        self._reader.cancel()


@pytest.fixture
async def xds() -> AsyncIterator[tuple[SnapshotCache, XdsServer, grpc.aio.Channel]]:
    cache = SnapshotCache()
    xds_server = XdsServer(cache=cache)
    server = grpc.aio.server()
    xds_server.register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield cache, xds_server, channel
    await channel.close()
    await server.stop(grace=None)


def names_of(response: discovery_pb2.DiscoveryResponse) -> list[str]:
    out = []
    for packed in response.resources:
        message = (
            cluster_pb2.Cluster()
            if packed.type_url == types.CLUSTER
            else endpoint_pb2.ClusterLoadAssignment()
        )
        packed.Unpack(message)
        out.append(getattr(message, "name", "") or getattr(message, "cluster_name", ""))
    return out


async def test_sotw_wildcard_ack_nack_and_stale_nonce(xds) -> None:  # type: ignore[no-untyped-def]
    cache, xds_server, channel = xds
    cache.set_snapshot("edge", config({"a": (1,), "b": (2,)}))
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    client = Client(stub.StreamAggregatedResources())
    await client.send(discovery_pb2.DiscoveryRequest(node=NODE, type_url=types.CLUSTER))
    first = await client.recv()
    assert isinstance(first, discovery_pb2.DiscoveryResponse)
    assert sorted(names_of(first)) == ["a", "b"]
    assert first.nonce and first.version_info
    # ACK: nothing more is sent while nothing changes.
    await client.send(
        discovery_pb2.DiscoveryRequest(
            type_url=types.CLUSTER, version_info=first.version_info, response_nonce=first.nonce
        )
    )
    await client.expect_silence()

    # A removal in state of the world is the full set without it.
    cache.set_snapshot("edge", config({"a": (1,)}))
    second = await client.recv()
    assert names_of(second) == ["a"]

    # NACK: logged and counted; the rejected version is not resent.
    await client.send(
        discovery_pb2.DiscoveryRequest(
            type_url=types.CLUSTER,
            version_info=first.version_info,
            response_nonce=second.nonce,
            error_detail=status_pb2.Status(code=3, message="cluster a: bad thing"),
        )
    )
    await client.expect_silence()
    assert xds_server.metrics.nack_count(types.CLUSTER) == 1
    (status,) = list(xds_server.registry)
    nack = status.types[types.CLUSTER].last_nack
    assert nack is not None and "bad thing" in nack.message
    assert status.types[types.CLUSTER].acked_version == first.version_info

    # A stale nonce (an older response) is ignored, even with a new name set.
    await client.send(
        discovery_pb2.DiscoveryRequest(
            type_url=types.CLUSTER, resource_names=["zzz"], response_nonce=first.nonce
        )
    )
    await client.expect_silence()
    # The next real change is sent.
    cache.set_snapshot("edge", config({"a": (1,), "c": (3,)}))
    third = await client.recv()
    assert sorted(names_of(third)) == ["a", "c"]
    client.close()


async def test_sotw_ads_order_and_named_resource_answered_when_it_appears(xds) -> None:  # type: ignore[no-untyped-def]
    cache, _, channel = xds
    cache.set_snapshot("edge", config({"a": (1,)}))
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    client = Client(stub.StreamAggregatedResources())
    await client.send(discovery_pb2.DiscoveryRequest(node=NODE, type_url=types.CLUSTER))
    clusters = await client.recv()
    await client.send(
        discovery_pb2.DiscoveryRequest(type_url=types.ENDPOINT, resource_names=["a", "later"])
    )
    eds = await client.recv()
    assert names_of(eds) == ["a"]
    await client.send(
        discovery_pb2.DiscoveryRequest(
            type_url=types.CLUSTER,
            version_info=clusters.version_info,
            response_nonce=clusters.nonce,
        )
    )
    await client.send(
        discovery_pb2.DiscoveryRequest(
            type_url=types.ENDPOINT,
            resource_names=["a", "later"],
            version_info=eds.version_info,
            response_nonce=eds.nonce,
        )
    )
    await client.expect_silence()
    # A new cluster and its endpoints: the cluster comes first.
    cache.set_snapshot("edge", config({"a": (1,), "later": (9,)}))
    got = [await client.recv(), await client.recv()]
    assert [r.type_url for r in got] == [types.CLUSTER, types.ENDPOINT]
    assert sorted(names_of(got[1])) == ["a", "later"]
    client.close()


async def test_delta_reconnect_sends_only_what_differs(xds) -> None:  # type: ignore[no-untyped-def]
    cache, _, channel = xds
    cache.set_snapshot("edge", config({"a": (1,), "b": (2,), "c": (3,)}))
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    client = Client(stub.DeltaAggregatedResources())
    await client.send(discovery_pb2.DeltaDiscoveryRequest(node=NODE, type_url=types.CLUSTER))
    first = await client.recv()
    assert isinstance(first, discovery_pb2.DeltaDiscoveryResponse)
    versions = {r.name: r.version for r in first.resources}
    assert sorted(versions) == ["a", "b", "c"]
    await client.send(
        discovery_pb2.DeltaDiscoveryRequest(type_url=types.CLUSTER, response_nonce=first.nonce)
    )
    await client.expect_silence()
    # Removal is explicit in delta.
    cache.set_snapshot("edge", config({"a": (1,), "b": (2,)}))
    removal = await client.recv()
    assert list(removal.removed_resources) == ["c"] and not removal.resources
    client.close()

    # Reconnect holding a and an outdated b: only b (changed) and nothing
    # about a is sent; d, which it claims but does not exist, is removed.
    changed_b = config({"a": (1,), "b": (2,)})
    cache.set_snapshot("edge", changed_b)
    reconnect = Client(stub.DeltaAggregatedResources())
    await reconnect.send(
        discovery_pb2.DeltaDiscoveryRequest(
            node=NODE,
            type_url=types.CLUSTER,
            initial_resource_versions={"a": versions["a"], "b": "old", "d": "x"},
        )
    )
    response = await reconnect.recv()
    assert [r.name for r in response.resources] == ["b"]
    assert list(response.removed_resources) == ["d"]
    reconnect.close()


async def test_delta_named_subscription_changes(xds) -> None:  # type: ignore[no-untyped-def]
    cache, _, channel = xds
    cache.set_snapshot("edge", config({"a": (1,), "b": (2,)}))
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    client = Client(stub.DeltaAggregatedResources())
    await client.send(
        discovery_pb2.DeltaDiscoveryRequest(
            node=NODE, type_url=types.ENDPOINT, resource_names_subscribe=["a", "new"]
        )
    )
    first = await client.recv()
    assert [r.name for r in first.resources] == ["a"]
    await client.send(
        discovery_pb2.DeltaDiscoveryRequest(
            type_url=types.ENDPOINT,
            response_nonce=first.nonce,
            resource_names_subscribe=["b"],
            resource_names_unsubscribe=["a"],
        )
    )
    second = await client.recv()
    assert [r.name for r in second.resources] == ["b"]
    # Changes to an unsubscribed resource are not sent; a subscribed name
    # that appears later is.
    cache.set_snapshot("edge", config({"a": (7,), "b": (2,), "new": (5,)}))
    third = await client.recv()
    assert [r.name for r in third.resources] == ["new"]
    await client.expect_silence()
    client.close()


def test_inconsistent_snapshot_is_refused() -> None:
    cache = SnapshotCache()
    broken = build_snapshot(
        {
            types.CLUSTER: {"a": eds_cluster("a")},
            types.ENDPOINT: {},
            types.LISTENER: {"http": rds_listener("http", "missing")},
            types.ROUTE: {},
        }
    )
    errors = consistency_errors(broken)
    assert any("'a' has no ClusterLoadAssignment" in e for e in errors)
    assert any("'missing' is missing" in e for e in errors)
    with pytest.raises(InconsistentSnapshotError):
        cache.set_snapshot("edge", broken)
    assert cache.current("edge") is None


def test_versions_are_content_hashes() -> None:
    one = config({"a": (1,), "b": (2,)})
    same = config({"b": (2,), "a": (1,)})
    other = config({"a": (1,), "b": (3,)})
    assert one.version == same.version
    assert one.version != other.version
    assert one.of_type(types.CLUSTER).version == other.of_type(types.CLUSTER).version
    cache = SnapshotCache()
    assert cache.set_snapshot("edge", one)
    assert not cache.set_snapshot("edge", same)


def test_concatenated_pieces_parse_as_the_real_messages() -> None:
    snapshot = config({"a": (1,), "b": (2,)})
    resources = snapshot.of_type(types.CLUSTER)
    sotw = discovery_pb2.DiscoveryResponse.FromString(resources.sotw_pieces)
    assert [r.type_url for r in sotw.resources] == [types.CLUSTER] * 2
    delta = discovery_pb2.DeltaDiscoveryResponse.FromString(
        b"".join(r.delta_piece for r in resources.resources.values())
    )
    assert {(r.name, r.version) for r in delta.resources} == {
        (name, r.version) for name, r in resources.resources.items()
    }


async def test_per_type_services_serve_envoys_that_do_not_use_ads(xds) -> None:  # type: ignore[no-untyped-def]
    from envoy.service.cluster.v3 import cds_pb2_grpc
    from envoy.service.endpoint.v3 import eds_pb2_grpc

    cache, _, channel = xds
    cache.set_snapshot("edge", config({"a": (1,), "b": (2,)}))
    clusters = Client(cds_pb2_grpc.ClusterDiscoveryServiceStub(channel).StreamClusters())
    # Per-type streams may leave type_url empty: the service implies it.
    await clusters.send(discovery_pb2.DiscoveryRequest(node=NODE))
    response = await clusters.recv()
    assert response.type_url == types.CLUSTER
    assert sorted(names_of(response)) == ["a", "b"]
    # Asking a per-type service for another type gets nothing.
    await clusters.send(discovery_pb2.DiscoveryRequest(type_url=types.LISTENER))
    await clusters.expect_silence()
    clusters.close()

    endpoints_stream = Client(eds_pb2_grpc.EndpointDiscoveryServiceStub(channel).DeltaEndpoints())
    await endpoints_stream.send(
        discovery_pb2.DeltaDiscoveryRequest(node=NODE, resource_names_subscribe=["b"])
    )
    delta = await endpoints_stream.recv()
    assert delta.type_url == types.ENDPOINT
    assert [r.name for r in delta.resources] == ["b"]
    endpoints_stream.close()


async def test_streams_on_one_version_share_one_serialised_response(xds) -> None:  # type: ignore[no-untyped-def]
    cache, xds_server, channel = xds
    cache.set_snapshot("edge", config({f"c{i}": (i + 1,) for i in range(50)}))
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    clients = [Client(stub.StreamAggregatedResources()) for _ in range(3)]
    for client in clients:
        await client.send(discovery_pb2.DiscoveryRequest(node=NODE, type_url=types.CLUSTER))
    responses = [await client.recv() for client in clients]
    assert len({r.version_info for r in responses}) == 1
    assert all(len(r.resources) == 50 for r in responses)
    # The body is built once per (type, version); each stream only adds its nonce.
    resources = cache.current("edge").of_type(types.CLUSTER)
    shared = xds_server.shared_responses
    assert shared.wildcard_body(resources) is shared.wildcard_body(resources)
    assert shared.built == 1
    for client in clients:
        client.close()


def test_a_listener_naming_a_missing_secret_is_inconsistent() -> None:
    from envoy.extensions.transport_sockets.tls.v3 import tls_pb2

    listener = rds_listener("https", "https")
    context = tls_pb2.DownstreamTlsContext()
    context.common_tls_context.tls_certificate_sds_secret_configs.add(name="demo/cert")
    chain = listener.filter_chains[0]
    chain.transport_socket.name = "envoy.transport_sockets.tls"
    chain.transport_socket.typed_config.Pack(context)
    snapshot = build_snapshot(
        {
            types.LISTENER: {"https": listener},
            types.ROUTE: {"https": route_pb2.RouteConfiguration(name="https")},
            types.SECRET: {},
        }
    )
    assert consistency_errors(snapshot) == ["listener secret 'demo/cert' is missing"]


async def test_a_delta_wildcard_subscription_is_answered_even_when_empty(xds) -> None:  # type: ignore[no-untyped-def]
    cache, _, channel = xds
    cache.set_snapshot("edge", config({}))
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    client = Client(stub.DeltaAggregatedResources())
    await client.send(discovery_pb2.DeltaDiscoveryRequest(node=NODE, type_url=types.CLUSTER))
    first = await client.recv()
    assert first.type_url == types.CLUSTER
    assert not first.resources and not first.removed_resources
    await client.send(
        discovery_pb2.DeltaDiscoveryRequest(type_url=types.CLUSTER, response_nonce=first.nonce)
    )
    await client.expect_silence()
    client.close()


def static_clusters(**timeouts: int):  # type: ignore[no-untyped-def]
    made = {}
    for name, seconds in timeouts.items():
        made[name] = cluster_pb2.Cluster(name=name, type=cluster_pb2.Cluster.STATIC)
        made[name].connect_timeout.seconds = seconds
    return build_snapshot({types.CLUSTER: made})


def timeouts_of(response) -> dict[str, int]:  # type: ignore[no-untyped-def]
    found = {}
    for packed in response.resources:
        message = cluster_pb2.Cluster()
        packed.Unpack(message)
        found[message.name] = message.connect_timeout.seconds
    return found


async def test_a_sotw_stream_holding_a_rejected_cluster_leaves_others_on_the_shared_body(
    xds,
) -> None:  # type: ignore[no-untyped-def]
    cache, xds_server, channel = xds
    cache.set_snapshot("edge", static_clusters(a=1, b=1))
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    nodes = [NODE, base_pb2.Node(id="envoy-2", cluster="edge")]
    clients = [Client(stub.StreamAggregatedResources()) for _ in nodes]

    def acked_by(node_id: str) -> str:
        (status,) = [s for s in xds_server.registry if s.node_id == node_id]
        return str(status.of_type(types.CLUSTER).acked_version)

    async def ack(client: Client, node: base_pb2.Node, response) -> None:  # type: ignore[no-untyped-def]
        await client.send(
            discovery_pb2.DiscoveryRequest(
                type_url=types.CLUSTER,
                version_info=response.version_info,
                response_nonce=response.nonce,
            )
        )
        await wait_until(lambda: acked_by(node.id) == response.version_info, message="ACKed")

    for client, node in zip(clients, nodes, strict=True):
        await client.send(discovery_pb2.DiscoveryRequest(node=node, type_url=types.CLUSTER))
        await ack(client, node, await client.recv())
    cache.set_snapshot("edge", static_clusters(a=1, b=2))
    rejected, accepted = [await client.recv() for client in clients]
    # envoy-1 rejects b; envoy-2 takes it.
    await clients[0].send(
        discovery_pb2.DiscoveryRequest(
            type_url=types.CLUSTER,
            version_info=acked_by(NODE.id),
            response_nonce=rejected.nonce,
            error_detail=status_pb2.Status(code=3, message="cluster b: bad"),
        )
    )
    held = await clients[0].recv()
    assert timeouts_of(held) == {"a": 1, "b": 1}
    await ack(clients[0], nodes[0], held)
    await ack(clients[1], nodes[1], accepted)

    built = xds_server.shared_responses.built
    cache.set_snapshot("edge", static_clusters(a=1, b=2, c=1))
    own, shared = [await client.recv() for client in clients]
    assert timeouts_of(own) == {"a": 1, "b": 1, "c": 1}
    assert timeouts_of(shared) == {"a": 1, "b": 2, "c": 1}
    current = cache.current("edge").of_type(types.CLUSTER)
    assert shared.version_info == current.version != own.version_info
    # One serialisation for the healthy stream; the held one built its own.
    assert xds_server.shared_responses.built == built + 1
    for client in clients:
        client.close()


# ------------------------------------------- make before break (server/warming.py)


def routed(*clusters: str):  # type: ignore[no-untyped-def]
    """One listener whose route config sends host `c` to cluster `c`, each with endpoints."""
    route = route_pb2.RouteConfiguration(name="http")
    for name in clusters:
        host = route.virtual_hosts.add(name=name, domains=[name])
        entry = host.routes.add()
        entry.match.prefix = "/"
        entry.route.cluster = name
    return build_snapshot(
        {
            types.CLUSTER: {name: eds_cluster(name) for name in clusters},
            types.ENDPOINT: {name: endpoints(name, 1) for name in clusters},
            types.LISTENER: {"http": rds_listener("http", "http")},
            types.ROUTE: {"http": route},
        }
    )


def hosts_of(response) -> list[str]:  # type: ignore[no-untyped-def]
    route = route_pb2.RouteConfiguration()
    packed = response.resources[0]
    # A delta response wraps each resource in a Resource.
    (packed.resource if isinstance(packed, discovery_pb2.Resource) else packed).Unpack(route)
    return sorted(host.name for host in route.virtual_hosts)


async def drain(client: Client, seconds: float = 0.3) -> list:  # type: ignore[type-arg]
    """Every response that arrives within `seconds`."""
    await asyncio.sleep(seconds)
    got = []
    while not client._received.empty():
        got.append(client._received.get_nowait())
    return got


class SotwEnvoy:
    """Plays an ADS state-of-the-world Envoy: asks, ACKs, subscribes by name."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.last: dict[str, discovery_pb2.DiscoveryResponse] = {}
        self.names: dict[str, list[str]] = {types.ENDPOINT: ["a"], types.ROUTE: ["http"]}

    async def ask(self, type_url: str, *, first: bool = False) -> None:
        last = self.last.get(type_url)
        await self.client.send(
            discovery_pb2.DiscoveryRequest(
                node=NODE if first else None,
                type_url=type_url,
                resource_names=self.names.get(type_url, []),
                version_info=last.version_info if last else "",
                response_nonce=last.nonce if last else "",
            )
        )

    async def recv(self):  # type: ignore[no-untyped-def]
        response = await self.client.recv()
        self.last[response.type_url] = response
        return response

    async def connect(self) -> None:
        """The startup sequence, each type answered and ACKed."""
        for index, type_url in enumerate(
            [types.CLUSTER, types.ENDPOINT, types.LISTENER, types.ROUTE]
        ):
            await self.ask(type_url, first=index == 0)
            assert (await self.recv()).type_url == type_url
            await self.ask(type_url)
        await self.client.expect_silence()


async def test_sotw_routes_wait_until_a_new_cluster_and_its_endpoints_are_acked(xds) -> None:  # type: ignore[no-untyped-def]
    cache, _, channel = xds
    cache.set_snapshot("edge", routed("a"))
    envoy = SotwEnvoy(
        Client(ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources())
    )
    await envoy.connect()

    cache.set_snapshot("edge", routed("a", "new"))
    cds = await envoy.recv()
    assert cds.type_url == types.CLUSTER and sorted(names_of(cds)) == ["a", "new"]
    # Nothing that may name the new cluster before it warms (a resent EDS is fine).
    early = await drain(envoy.client)
    assert {r.type_url for r in early} <= {types.ENDPOINT}, early
    for response in early:
        envoy.last[response.type_url] = response
    # CDS ACKed, but its endpoints not yet even asked for: still held.
    await envoy.ask(types.CLUSTER)
    await envoy.client.expect_silence()
    # Envoy subscribes to the new cluster's endpoints: answered, routes still held.
    envoy.names[types.ENDPOINT] = ["a", "new"]
    await envoy.ask(types.ENDPOINT)
    eds = await envoy.recv()
    assert eds.type_url == types.ENDPOINT and sorted(names_of(eds)) == ["a", "new"]
    await envoy.client.expect_silence()
    # Its ACK warms the cluster: now the routes.
    await envoy.ask(types.ENDPOINT)
    rds = await envoy.recv()
    assert rds.type_url == types.ROUTE and hosts_of(rds) == ["a", "new"]
    envoy.client.close()


async def test_sotw_a_dropped_cluster_outlives_the_routes_that_named_it(xds) -> None:  # type: ignore[no-untyped-def]
    cache, xds_server, channel = xds
    cache.set_snapshot("edge", routed("a", "old"))
    envoy = SotwEnvoy(
        Client(ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources())
    )
    envoy.names[types.ENDPOINT] = ["a", "old"]
    await envoy.connect()
    shared_before = xds_server.shared_responses.built

    cache.set_snapshot("edge", routed("a"))
    # Routes first; CDS still has the cluster until they are ACKed.
    rds = await envoy.recv()
    assert rds.type_url == types.ROUTE and hosts_of(rds) == ["a"]
    await envoy.client.expect_silence()
    await envoy.ask(types.ROUTE)
    cds = await envoy.recv()
    assert cds.type_url == types.CLUSTER and names_of(cds) == ["a"]
    # Back on the snapshot's own version: the shared body.
    assert cds.version_info == cache.current("edge").of_type(types.CLUSTER).version
    assert xds_server.shared_responses.built == shared_before + 1
    envoy.client.close()


async def test_delta_routes_wait_for_new_clusters_and_leave_before_dropped_ones(xds) -> None:  # type: ignore[no-untyped-def]
    cache, _, channel = xds
    cache.set_snapshot("edge", routed("a", "old"))
    client = Client(ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).DeltaAggregatedResources())

    async def ack(response) -> None:  # type: ignore[no-untyped-def]
        await client.send(
            discovery_pb2.DeltaDiscoveryRequest(
                type_url=response.type_url, response_nonce=response.nonce
            )
        )

    subscriptions = {
        types.CLUSTER: [],
        types.ENDPOINT: ["a", "old"],
        types.LISTENER: [],
        types.ROUTE: ["http"],
    }
    for index, (type_url, names) in enumerate(subscriptions.items()):
        await client.send(
            discovery_pb2.DeltaDiscoveryRequest(
                node=NODE if index == 0 else None, type_url=type_url, resource_names_subscribe=names
            )
        )
        response = await client.recv()
        assert response.type_url == type_url
        await ack(response)
    await client.expect_silence()

    # "old" goes, "new" comes: CDS adds new and keeps old; routes wait.
    cache.set_snapshot("edge", routed("a", "new"))
    cds = await client.recv()
    assert cds.type_url == types.CLUSTER
    assert [r.name for r in cds.resources] == ["new"] and not cds.removed_resources
    await client.expect_silence()
    await ack(cds)
    await client.send(
        discovery_pb2.DeltaDiscoveryRequest(
            type_url=types.ENDPOINT, resource_names_subscribe=["new"]
        )
    )
    eds = await client.recv()
    assert eds.type_url == types.ENDPOINT and [r.name for r in eds.resources] == ["new"]
    await client.expect_silence()
    await ack(eds)
    rds = await client.recv()
    assert rds.type_url == types.ROUTE and hosts_of(rds) == ["a", "new"]
    await client.expect_silence()
    # Once the routes without "old" are ACKed, "old" is removed.
    await ack(rds)
    removal = await client.recv()
    assert removal.type_url == types.CLUSTER
    assert list(removal.removed_resources) == ["old"] and not removal.resources
    client.close()


async def test_routes_are_not_held_forever_for_a_cluster_that_never_warms() -> None:
    cache = SnapshotCache()
    xds_server = XdsServer(cache=cache, warming_bound_seconds=0.5)
    server = grpc.aio.server()
    xds_server.register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            cache.set_snapshot("edge", routed("a"))
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
            envoy = SotwEnvoy(Client(stub.StreamAggregatedResources()))
            await envoy.connect()

            # Envoy ACKs the cluster but never asks for its endpoints: the
            # routes go once the bound has passed.
            cache.set_snapshot("edge", routed("a", "cold"))
            assert (await envoy.recv()).type_url == types.CLUSTER
            await envoy.ask(types.CLUSTER)
            start = asyncio.get_running_loop().time()
            responses = [await envoy.recv()]
            while responses[-1].type_url != types.ROUTE:
                responses.append(await envoy.recv())
            assert asyncio.get_running_loop().time() - start >= 0.3
            assert hosts_of(responses[-1]) == ["a", "cold"]
            await envoy.ask(types.ROUTE)

            # A NACKed cluster releases its routes at once.
            cache.set_snapshot("edge", routed("a", "cold", "bad"))
            cds = await envoy.recv()
            assert cds.type_url == types.CLUSTER
            await envoy.client.send(
                discovery_pb2.DiscoveryRequest(
                    type_url=types.CLUSTER,
                    version_info=envoy.last[types.CLUSTER].version_info,
                    response_nonce=cds.nonce,
                    error_detail=status_pb2.Status(code=3, message="cluster bad: no"),
                )
            )
            rds = await asyncio.wait_for(envoy.recv(), 0.4)
            while rds.type_url != types.ROUTE:
                rds = await asyncio.wait_for(envoy.recv(), 0.4)
            assert hosts_of(rds) == ["a", "bad", "cold"]
            envoy.client.close()
    finally:
        await server.stop(grace=None)


async def test_a_client_that_never_acks_clusters_gets_its_routes_unheld(xds) -> None:  # type: ignore[no-untyped-def]
    cache, _, channel = xds
    cache.set_snapshot("edge", routed("a"))
    client = Client(
        ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel).StreamAggregatedResources()
    )
    # Envoy itself asks for listeners only after its first clusters warmed;
    # a client that asks for everything at once and ACKs nothing is not held.
    await client.send(discovery_pb2.DiscoveryRequest(node=NODE, type_url=types.CLUSTER))
    await client.send(discovery_pb2.DiscoveryRequest(type_url=types.LISTENER))
    await client.send(discovery_pb2.DiscoveryRequest(type_url=types.ROUTE, resource_names=["http"]))
    got = [await client.recv() for _ in range(3)]
    assert [r.type_url for r in got] == [types.CLUSTER, types.LISTENER, types.ROUTE]
    cache.set_snapshot("edge", routed("a", "new"))
    got = [await client.recv() for _ in range(2)]
    assert [r.type_url for r in got] == [types.CLUSTER, types.ROUTE]
    assert hosts_of(got[1]) == ["a", "new"]
    client.close()
