"""Connections over time, with a real Envoy and real grpcio peers.

- 1000 client connections become at most 2 upstream connections per endpoint;
- a server-streaming call that lasts longer than 60 s (and is silent for 20 s
  at a time) survives;
- a rolling replacement of every backend endpoint under steady load fails no call;
- a client connection older than the maximum connection duration is drained
  (GOAWAY) and the client reconnects, failing no call.

Each load loop is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from ingress_harness import Ingress, ingress, routes_to, rule, service
from peers import BackendFactory, wait_until
from test_grpc_end_to_end import Servers, eds_health, slice_of, start

from xds_ingress.app import ControlPlane
from xds_ingress.demo.backend import Greeter, GreeterBackend
from xds_ingress.demo.v1 import greeter_pb2, greeter_pb2_grpc
from xds_ingress.settings import HostPort, ServeSettings
from xds_ingress.sources.file import FileSource

GrpcContext = grpc.aio.ServicerContext[greeter_pb2.HelloRequest, greeter_pb2.HelloReply]
HOST = "conn.example.com"
CLUSTER = "demo/greeter:50051"


@pytest.fixture
async def ingress_under_test(tmp_path: Path) -> AsyncIterator[Ingress]:
    under_test = Ingress(workdir=tmp_path, delta=True)
    yield under_test
    await under_test.stop()


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    started = Servers()
    yield started
    for server in started.servers:
        await server.stop(grace=None)


def envoy_stats(under_test: Ingress) -> dict[str, int]:
    assert under_test.envoy is not None
    document = json.loads(under_test.envoy.admin_get("/stats?format=json", timeout=5))
    return {
        stat["name"]: int(stat["value"])
        for stat in document.get("stats", [])
        if isinstance(stat.get("value"), int)
    }


def upstream_connections(under_test: Ingress, cluster: str) -> dict[str, int]:
    """host:port → connections Envoy has opened to that endpoint of `cluster`, ever."""
    assert under_test.envoy is not None
    found: dict[str, int] = {}
    for line in under_test.envoy.admin_get("/clusters", timeout=5).splitlines():
        # demo/greeter:50051::127.0.0.1:40001::cx_total::1
        parts = line.split("::")
        if len(parts) == 4 and parts[0] == cluster and parts[2] == "cx_total":
            found[parts[1]] = int(parts[3])
    return found


# ---------------------------------------------------------------- coalescing

CLIENT_CONNECTIONS = 1000
_BATCH = 100


@pytest.mark.timeout(240)
async def test_a_thousand_client_connections_share_two_upstream_connections_per_endpoint(
    ingress_under_test: Ingress, backend_factory: BackendFactory
) -> None:
    first = await backend_factory("a")
    second = await backend_factory("b")
    ingress_under_test.config.write(
        "site.yaml",
        service("greeter"),
        slice_of("greeter", first.port),
        slice_of("greeter", second.port),
        ingress("site", [rule(HOST, ("/", "Prefix", "greeter"))]),
    )
    await start(ingress_under_test)
    await routes_to(ingress_under_test, HOST, "a")
    before = envoy_stats(ingress_under_test)["http.http.downstream_cx_total"]
    channels: list[grpc.aio.Channel] = []
    answered: Counter[str] = Counter()
    deadline = time.monotonic() + 150

    async def call(index: int) -> None:
        channel = grpc.aio.insecure_channel(
            ingress_under_test.target,
            options=[
                ("grpc.default_authority", HOST),
                ("grpc.enable_retries", 0),
                # Its own subchannel, so its own TCP connection: grpcio would
                # otherwise share one connection among identical channels.
                ("grpc.use_local_subchannel_pool", 1),
                ("grpc.primary_user_agent", f"client-{index}"),
            ],
        )
        channels.append(channel)
        reply = await greeter_pb2_grpc.GreeterStub(channel).SayHello(
            greeter_pb2.HelloRequest(name=str(index)), timeout=30
        )
        answered[reply.backend] += 1

    try:
        for start_index in range(0, CLIENT_CONNECTIONS, _BATCH):
            assert time.monotonic() < deadline, f"only {start_index} connections in time"
            await asyncio.gather(*(call(i) for i in range(start_index, start_index + _BATCH)))
        stats = envoy_stats(ingress_under_test)
        # Every client had a connection of its own, all open at once.
        assert stats["http.http.downstream_cx_total"] - before >= CLIENT_CONNECTIONS
        assert stats["http.http.downstream_cx_active"] >= CLIENT_CONNECTIONS
    finally:
        await asyncio.gather(*(channel.close(None) for channel in channels))
    assert sum(answered.values()) == CLIENT_CONNECTIONS
    assert set(answered) == {"a", "b"}, answered
    per_endpoint = upstream_connections(ingress_under_test, CLUSTER)
    assert len(per_endpoint) == 2, per_endpoint
    assert all(1 <= count <= 2 for count in per_endpoint.values()), per_endpoint


# ---------------------------------------------------------------- long streams


class SparseGreeter(Greeter):
    """Streams a reply, then nothing for `gap` seconds, `count` times: a quiet long stream."""

    def __init__(self, *, gap: float) -> None:
        super().__init__(name="sparse")
        self.gap = gap

    async def SayHelloServerStream(
        self, request: greeter_pb2.HelloRequest, context: GrpcContext
    ) -> AsyncIterator[greeter_pb2.HelloReply]:
        for index in range(request.count):
            if index:
                await asyncio.sleep(self.gap)
            yield greeter_pb2.HelloReply(message=f"{index}", backend="sparse")


@pytest.mark.timeout(150)
async def test_a_server_stream_longer_than_a_minute_survives(
    ingress_under_test: Ingress, servers: Servers
) -> None:
    port = await servers.start(SparseGreeter(gap=20.5))
    ingress_under_test.config.write(
        "site.yaml",
        service("greeter"),
        slice_of("greeter", port),
        ingress("site", [rule(HOST, ("/", "Prefix", "greeter"))]),
    )
    await start(ingress_under_test)
    await routes_to(ingress_under_test, HOST, "sparse")
    options = [("grpc.default_authority", HOST), ("grpc.enable_retries", 0)]
    began = time.monotonic()
    messages = []
    async with grpc.aio.insecure_channel(ingress_under_test.target, options=options) as channel:
        stream = greeter_pb2_grpc.GreeterStub(channel).SayHelloServerStream(
            greeter_pb2.HelloRequest(name="long", count=4), timeout=90
        )
        async for reply in stream:
            messages.append(reply.message)
        code = await stream.code()
    lasted = time.monotonic() - began
    assert code is grpc.StatusCode.OK
    assert messages == ["0", "1", "2", "3"]
    assert lasted > 60, lasted


# ---------------------------------------------------------------- rolling replacement


@dataclass
class Load:
    """Unary calls from a few workers on one channel until stopped (or bounded out)."""

    target: str
    workers: int = 4
    max_calls: int = 20_000
    max_seconds: float = 90.0

    def __post_init__(self) -> None:
        self.answered: Counter[str] = Counter()
        self.failed: list[str] = []
        self._stop = asyncio.Event()

    @property
    def calls(self) -> int:
        return sum(self.answered.values()) + len(self.failed)

    async def run(self) -> None:
        options = [("grpc.default_authority", HOST), ("grpc.enable_retries", 0)]
        deadline = time.monotonic() + self.max_seconds
        async with grpc.aio.insecure_channel(self.target, options=options) as channel:
            stub = greeter_pb2_grpc.GreeterStub(channel)

            async def worker() -> None:
                while (
                    not self._stop.is_set()
                    and self.calls < self.max_calls
                    and time.monotonic() < deadline
                ):
                    try:
                        reply = await stub.SayHello(
                            greeter_pb2.HelloRequest(name="load"), timeout=5
                        )
                    except grpc.aio.AioRpcError as error:
                        self.failed.append(f"{error.code().name}: {error.details()}")
                    else:
                        self.answered[reply.backend] += 1
                    await asyncio.sleep(0.005)

            await asyncio.gather(*(worker() for _ in range(self.workers)))

    def stop(self) -> None:
        self._stop.set()


@pytest.mark.timeout(180)
async def test_replacing_every_endpoint_under_load_fails_no_call(
    ingress_under_test: Ingress, backend_factory: BackendFactory
) -> None:
    live: list[GreeterBackend] = [await backend_factory(f"old-{i}") for i in range(3)]

    def write(*, draining: GreeterBackend | None = None) -> None:
        slices = [slice_of("greeter", b.port) for b in live if b is not draining]
        if draining is not None:
            slices.append(
                slice_of("greeter", draining.port, ready=False, serving=True, terminating=True)
            )
        ingress_under_test.config.write("svc.yaml", service("greeter"), *slices)

    ingress_under_test.config.write(
        "ingress.yaml", ingress("site", [rule(HOST, ("/", "Prefix", "greeter"))])
    )
    write()
    await start(ingress_under_test)
    await routes_to(ingress_under_test, HOST, "old-0")

    def health() -> dict[int, str]:
        return eds_health(ingress_under_test, CLUSTER)

    load = Load(ingress_under_test.target)

    async def replace(old: GreeterBackend, new: GreeterBackend) -> None:
        live.append(new)
        # The pod is terminating: serving what it has, taking nothing new.
        write(draining=old)
        await wait_until(
            lambda: health().get(old.port) == "DRAINING" and health().get(new.port) == "HEALTHY",
            timeout=15,
            message=f"{old.name} draining, {new.name} ready",
        )
        await asyncio.sleep(0.5)  # calls keep flowing to the others meanwhile
        await old.stop(grace=2.0)
        live.remove(old)
        write()
        await wait_until(lambda: old.port not in health(), timeout=15, message=f"{old.name} gone")
        calls = load.calls
        await wait_until(lambda: load.calls >= calls + 50, timeout=15, message="load goes on")

    running = asyncio.create_task(load.run())
    try:
        await wait_until(lambda: load.calls >= 100, timeout=15, message="load is running")
        for index in range(3):
            await replace(live[0], await backend_factory(f"new-{index}"))
    finally:
        load.stop()
        await running
    assert load.failed == [], Counter(load.failed)
    assert {name for name in load.answered if name.startswith("new-")} == {
        "new-0",
        "new-1",
        "new-2",
    }
    assert sum(load.answered.values()) >= 500, load.answered


# ---------------------------------------------------------------- max connection duration


@dataclass
class ShortLivedConnections(Ingress):
    """The harness's ingress, serving with --max-connection-duration set."""

    max_connection_duration_seconds: int = 2

    async def start_control_plane(self) -> ControlPlane:
        self.control_plane = ControlPlane.from_settings(
            ServeSettings(
                source=str(self.config.path),
                xds_address=HostPort("127.0.0.1", self.xds_port),
                listen_address="127.0.0.1",
                http_port=self.http_port,
                https_port=self.https_port,
                holdoff_seconds=0.02,
                max_holdoff_seconds=0.2,
                max_connection_duration_seconds=self.max_connection_duration_seconds,
            )
        )
        source = self.control_plane.source
        assert isinstance(source, FileSource)
        source.poll_interval = 0.05
        await self.control_plane.start()
        return self.control_plane


async def test_an_old_client_connection_is_drained_and_the_client_reconnects_without_failing(
    tmp_path: Path, backend_factory: BackendFactory
) -> None:
    under_test = ShortLivedConnections(workdir=tmp_path, delta=True)
    try:
        backend = await backend_factory("a")
        under_test.config.write(
            "site.yaml",
            service("greeter"),
            slice_of("greeter", backend.port),
            ingress("site", [rule(HOST, ("/", "Prefix", "greeter"))]),
        )
        await start(under_test)
        await routes_to(under_test, HOST, "a")
        before = envoy_stats(under_test)
        load = Load(under_test.target, workers=2, max_calls=2_000, max_seconds=7.0)
        await load.run()
        after = envoy_stats(under_test)
    finally:
        await under_test.stop()
    drained = "http.http.downstream_cx_max_duration_reached"
    # grpc-python (1.x core) has a known client-side race: a call started in
    # the instant its channel reads a GOAWAY fails with "Stream removed"
    # instead of being retried transparently, though Envoy never saw it
    # (safe to retry). That is the only failure tolerated, at most one per
    # drained connection; any other failure, or more, is a defect of ours.
    races = [f for f in load.failed if "Stream removed (GOAWAY received" in f]
    others = [f for f in load.failed if f not in races]
    assert others == [], Counter(others)
    assert len(races) <= after[drained] - before.get(drained, 0), Counter(races)
    assert sum(load.answered.values()) >= 100
    # 7 s of one client at 2 s per connection: drained (GOAWAY) more than
    # once, and the client came back on a new connection each time.
    assert after[drained] - before.get(drained, 0) >= 2, after[drained]
    opened = after["http.http.downstream_cx_total"] - before["http.http.downstream_cx_total"]
    assert opened >= 3, opened
