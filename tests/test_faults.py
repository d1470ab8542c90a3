"""Faults under steady gRPC load: nothing fails, no configuration is lost.

Each test runs `xds-ingress serve` as child processes (mTLS on xDS, the
production path), a real Envoy, in-process Greeter backends and a bounded
load (tests/grpc_load.py) through Envoy, then breaks something:

- the control plane killed with SIGKILL and restarted;
- one of two control-plane replicas killed;
- an Envoy restarted (how long until it routes again);
- 200 endpoint changes in 12 s (1000 a minute) while calls run;
- ADS streams that subscribe and never read, beside a real Envoy.

"No configuration lost" is read from Envoy itself: its clusters and
listeners before and after, and its counters of removed clusters and
listeners, which must not move.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import statistics
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from control_plane_process import ControlPlaneProcess
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from grpc_load import SteadyLoad
from ingress_harness import NAMESPACE, ConfigFolder, ingress, rule, service
from mtls import ControlPlanePki
from peers import LOOPBACK, EnvoyFactory, EnvoyProcess, free_port, say_hello, wait_until

from xds_ingress.bootstrap import render_bootstrap
from xds_ingress.demo.backend import GreeterBackend
from xds_ingress.resources import types
from xds_ingress.translate.backends import backend_name

pytestmark = pytest.mark.timeout(180)

log = logging.getLogger(__name__)

NODE_CLUSTER = "test"
SERVICE_PORT = 50051  # the Service port the harness's Services declare


# ---------------------------------------------------------------- the stage


def slice_for(service_name: str, backend: str, port: int) -> dict[str, Any]:
    """One EndpointSlice per backend: each listens on its own port."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service_name}-{backend}",
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "grpc", "port": port}],
        "endpoints": [{"addresses": [LOOPBACK], "conditions": {"ready": True}}],
    }


@dataclass
class Stage:
    """A config folder, the certificates, the Envoy listener port and the backends."""

    workdir: Path
    config: ConfigFolder
    pki: ControlPlanePki
    http_port: int
    backends: dict[str, GreeterBackend]

    @property
    def target(self) -> str:
        return f"{LOOPBACK}:{self.http_port}"

    def route(self, hosts: dict[str, str]) -> None:
        """Host → backend name, each backend its own Service greeter-NAME."""
        self.config.write(
            "ingress.yaml",
            ingress(
                "main",
                [
                    rule(host, ("/", "Prefix", f"greeter-{backend}"))
                    for host, backend in sorted(hosts.items())
                ],
            ),
        )

    def endpoints(self, service_name: str, backends: Sequence[str]) -> None:
        self.config.write(
            f"endpoints-{service_name}.yaml",
            *(slice_for(service_name, name, self.backends[name].port) for name in backends),
        )

    def bootstrap(self, *control_planes: ControlPlaneProcess, delta: bool = True) -> dict[str, Any]:
        return render_bootstrap(
            xds_address=[cp.xds_address for cp in control_planes],
            node_id="envoy-1",
            node_cluster=NODE_CLUSTER,
            admin_address=f"{LOOPBACK}:0",
            delta=delta,
            tls=self.pki.client_tls(),
        )


@pytest.fixture
async def stage(tmp_path: Path) -> AsyncIterator[Stage]:
    started = {name: GreeterBackend(name=name) for name in ("a", "b", "c", "d")}
    for backend in started.values():
        await backend.start()
    config = ConfigFolder(tmp_path / "config")
    config.path.mkdir()
    built = Stage(
        workdir=tmp_path,
        config=config,
        pki=ControlPlanePki.create(tmp_path / "pki"),
        http_port=free_port(),
        backends=started,
    )
    config.write("services.yaml", *(service(f"greeter-{name}") for name in started))
    for name in started:
        built.endpoints(f"greeter-{name}", [name])
    built.route({"a.example.com": "a"})
    yield built
    for backend in started.values():
        await backend.stop(grace=None)


ControlPlanes = Callable[[str], ControlPlaneProcess]


@pytest.fixture
def control_planes(stage: Stage) -> Iterator[ControlPlanes]:
    """`control_planes(name)`: a control plane process on the stage's folder (not started)."""
    made: list[ControlPlaneProcess] = []

    def make(name: str) -> ControlPlaneProcess:
        control_plane = ControlPlaneProcess(
            source=stage.config.path,
            pki=stage.pki,
            http_port=stage.http_port,
            workdir=stage.workdir / "control-planes",
            name=name,
        )
        made.append(control_plane)
        return control_plane

    yield make
    for control_plane in made:
        control_plane.terminate()


async def started(control_plane: ControlPlaneProcess) -> ControlPlaneProcess:
    control_plane.start()
    await control_plane.wait_ready()
    return control_plane


async def routes(stage: Stage, host: str, backend: str, *, within_seconds: float = 10.0) -> None:
    async def answered_by_backend() -> bool:
        answered, _code = await say_hello(stage.target, authority=host, timeout=1.0)
        return answered == backend

    await wait_until(
        answered_by_backend, timeout=within_seconds, interval=0.05, message=f"{host} → {backend}"
    )


@dataclass(frozen=True)
class EnvoyState:
    """What an Envoy holds, and its counters of what it ever dropped."""

    clusters: frozenset[str]
    listeners: frozenset[str]
    clusters_removed: int
    listeners_removed: int

    @classmethod
    def of(cls, envoy: EnvoyProcess) -> EnvoyState:
        stats = envoy.stats()
        document = json.loads(envoy.admin_get("/listeners?format=json"))
        listeners = {entry["name"] for entry in document.get("listener_statuses", [])}
        return cls(
            clusters=frozenset(envoy.clusters()),
            listeners=frozenset(listeners),
            clusters_removed=stats.get("cluster_manager.cluster_removed", 0),
            listeners_removed=stats.get("listener_manager.listener_removed", 0),
        )


def assert_nothing_lost(before: EnvoyState, after: EnvoyState) -> None:
    assert before.clusters <= after.clusters, before.clusters - after.clusters
    assert before.listeners <= after.listeners, before.listeners - after.listeners
    assert (after.clusters_removed, after.listeners_removed) == (
        before.clusters_removed,
        before.listeners_removed,
    ), "Envoy removed a cluster or listener"


async def serving_envoy(
    envoy_factory: EnvoyFactory, bootstrap: dict[str, Any], stage: Stage
) -> EnvoyProcess:
    envoy = envoy_factory(bootstrap)
    await envoy.wait_ready()
    await routes(stage, "a.example.com", "a")
    return envoy


# ---------------------------------------------------------------- (a) killed and restarted


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "sotw"])
async def test_a_control_plane_killed_and_restarted_loses_no_call_and_no_config(
    stage: Stage, control_planes: ControlPlanes, envoy_factory: EnvoyFactory, delta: bool
) -> None:
    control_plane = await started(control_planes("cp"))
    envoy = await serving_envoy(envoy_factory, stage.bootstrap(control_plane, delta=delta), stage)
    before = EnvoyState.of(envoy)
    async with SteadyLoad(stage.target, authority="a.example.com") as load:
        await load.calls(50)
        control_plane.kill()
        killed = time.monotonic()
        # The outage: Envoy serves from what it holds.
        await envoy.wait_for(
            lambda: envoy.stat("control_plane.connected_state") == 0,
            timeout=10,
            message="Envoy sees the control plane gone",
        )
        await load.calls(50)
        restarted = time.monotonic()
        await started(control_plane)

        async def reconnected() -> bool:
            return await control_plane.nodes() == ["envoy-1"]

        await wait_until(reconnected, timeout=15, message="Envoy reconnected to the restarted one")
        # A change made after the restart reaches Envoy.
        stage.route({"a.example.com": "a", "b.example.com": "b"})
        await routes(stage, "b.example.com", "b")
        await load.calls(50)
    report = load.report
    log.info("killed and restarted: %s", report.summary())
    assert report.failed == 0, report.summary()
    assert report.ok_between(killed, restarted) >= 50, "no load during the outage"
    assert set(report.backends) == {"a"}
    after = EnvoyState.of(envoy)
    assert_nothing_lost(before, after)
    assert backend_name(namespace=NAMESPACE, service="greeter-b", port=SERVICE_PORT) in (
        after.clusters
    )


# ---------------------------------------------------------------- (b) two replicas


async def test_envoy_fails_over_to_the_other_replica(
    stage: Stage, control_planes: ControlPlanes, envoy_factory: EnvoyFactory
) -> None:
    replicas = [await started(control_planes(name)) for name in ("cp-1", "cp-2")]
    envoy = await serving_envoy(envoy_factory, stage.bootstrap(*replicas), stage)

    async def connected_to() -> list[ControlPlaneProcess]:
        return [replica for replica in replicas if await replica.nodes() == ["envoy-1"]]

    async def on_one_replica() -> bool:
        return len(await connected_to()) == 1

    await wait_until(on_one_replica, timeout=10, message="Envoy on one replica")
    (first,) = await connected_to()
    (survivor,) = (replica for replica in replicas if replica is not first)
    before = EnvoyState.of(envoy)
    async with SteadyLoad(stage.target, authority="a.example.com") as load:
        await load.calls(50)
        first.kill()
        failed_over_from = time.monotonic()

        async def on_survivor() -> bool:
            return await survivor.nodes() == ["envoy-1"]

        await wait_until(on_survivor, timeout=15, message="Envoy on the surviving replica")
        failover_seconds = time.monotonic() - failed_over_from
        stage.route({"a.example.com": "a", "c.example.com": "c"})
        await routes(stage, "c.example.com", "c")
        await load.calls(50)
    report = load.report
    log.info("failed over in %.2f s: %s", failover_seconds, report.summary())
    assert report.failed == 0, report.summary()
    assert_nothing_lost(before, EnvoyState.of(envoy))
    # Envoy's reconnect backoff starts at 0.25 s (bootstrap.py): failing
    # over is a matter of seconds, not of Envoy's default 30 s ceiling.
    assert failover_seconds < 10, failover_seconds


# ---------------------------------------------------------------- (c) an Envoy restarted


async def test_a_restarted_envoy_routes_again_within_a_second(
    stage: Stage, control_planes: ControlPlanes, envoy_factory: EnvoyFactory
) -> None:
    control_plane = await started(control_planes("cp"))
    envoy = await serving_envoy(envoy_factory, stage.bootstrap(control_plane), stage)
    resync_seconds: list[float] = []
    # New connections per call: a client's own reconnect backoff must not
    # pass for the ingress being slow.
    async with SteadyLoad(
        stage.target, authority="a.example.com", fresh_channels=True, pause_seconds=0.005
    ) as load:
        await load.calls(20)
        for _ in range(3):
            await envoy.stop()
            envoy.start()
            spawned = time.monotonic()
            await routes(stage, "a.example.com", "a", within_seconds=10)
            resync_seconds.append(time.monotonic() - spawned)
            resynced = time.monotonic()
            await load.calls(20)
            # Once it routes, it routes: no call begun after that fails.
            assert not load.report.failed_after(resynced), load.report.summary()
    log.info("Envoy restarted, routing again after %s s: %s", resync_seconds, load.report.summary())
    # From spawning the process to a call answered through it, Envoy's own
    # start included. The median of three: one slow start on a busy machine
    # says nothing about the control plane.
    assert statistics.median(resync_seconds) < 1.0, resync_seconds


# ---------------------------------------------------------------- (d) endpoint churn


async def test_a_thousand_endpoint_changes_a_minute_fail_no_call(
    stage: Stage, control_planes: ControlPlanes, envoy_factory: EnvoyFactory
) -> None:
    control_plane = await started(control_planes("cp"))
    envoy = await serving_envoy(envoy_factory, stage.bootstrap(control_plane), stage)
    cluster = backend_name(namespace=NAMESPACE, service="greeter-a", port=SERVICE_PORT)
    # Every change keeps some endpoints and moves others, never none: the
    # Service always has somewhere to send a call.
    names = sorted(stage.backends)
    subsets = itertools.cycle(
        [list(pair) for pair in itertools.combinations(names, 2)]
        + [list(triple) for triple in itertools.combinations(names, 3)]
    )
    changes, period = 200, 12.0 / 200
    # Envoy's stat names spell ":" as "_".
    eds_updates = f"cluster.{cluster.replace(':', '_')}.update_success"
    updates_before = envoy.stat(eds_updates)
    async with SteadyLoad(stage.target, authority="a.example.com") as load:
        await load.calls(20)
        begin = time.monotonic()
        for index in range(changes):
            last = next(subsets)
            stage.endpoints("greeter-a", last)
            await asyncio.sleep(max(0.0, begin + (index + 1) * period - time.monotonic()))
        churned_seconds = time.monotonic() - begin
        want = sorted((LOOPBACK, stage.backends[name].port) for name in last)
        await envoy.wait_for(
            lambda: sorted(envoy.cluster_endpoints(cluster)) == want,
            timeout=10,
            message="Envoy has the last endpoints",
        )
        await load.calls(20)
    report = load.report
    updates = envoy.stat(eds_updates) - updates_before
    log.info(
        "%d endpoint changes in %.1f s, %d EDS updates: %s",
        changes,
        churned_seconds,
        updates,
        report.summary(),
    )
    assert report.failed == 0, report.summary()
    assert churned_seconds < 15, churned_seconds
    # The changes reached Envoy as many EDS updates, not one at the end.
    assert updates >= 20, updates
    assert set(report.backends) == set(names), report.backends


# ---------------------------------------------------------------- (e) stalled streams


def _many_services(count: int) -> list[dict[str, Any]]:
    """Services with long names and many ports: a snapshot of some size."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"bulk-{index:04d}-{'x' * 40}", "namespace": NAMESPACE},
            "spec": {
                "ports": [{"name": "grpc", "port": 50051, "appProtocol": "kubernetes.io/h2c"}]
            },
        }
        for index in range(count)
    ]


def _bulk_rules(count: int, generation: int) -> list[dict[str, Any]]:
    """Routes to the bulk Services, every host renamed each generation, and one
    host of the generation routed to backend b, to see when it arrived.

    Long paths make each route configuration over 100 kB.
    """
    return [
        rule(f"generation-{generation}.example.com", ("/", "Prefix", "greeter-b")),
        *(
            rule(
                f"bulk-{index:04d}-g{generation}.example.com",
                (f"/bulk.v1.{'Service' * 16}/", "Prefix", f"bulk-{index:04d}-{'x' * 40}"),
            )
            for index in range(count)
        ),
    ]


# The plain HTTP listener's route configuration (translate/translator.py):
# what every generation of the test changes.
HTTP_ROUTES = "http"


async def _stalled_stream(
    target: str, credentials: grpc.ChannelCredentials, *, delta: bool, node_id: str
) -> tuple[grpc.aio.Channel, grpc.aio.StreamStreamCall[Any, Any]]:
    """An ADS stream that subscribes to clusters, listeners and the HTTP routes,
    then never reads a response."""
    channel = grpc.aio.secure_channel(target, credentials)
    stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
    node = base_pb2.Node(id=node_id, cluster=NODE_CLUSTER)
    call: grpc.aio.StreamStreamCall[Any, Any]
    if delta:
        call = stub.DeltaAggregatedResources()
        for type_url in (types.CLUSTER, types.LISTENER):
            await call.write(discovery_pb2.DeltaDiscoveryRequest(node=node, type_url=type_url))
        await call.write(
            discovery_pb2.DeltaDiscoveryRequest(
                type_url=types.ROUTE, resource_names_subscribe=[HTTP_ROUTES]
            )
        )
    else:
        call = stub.StreamAggregatedResources()
        for type_url in (types.CLUSTER, types.LISTENER):
            await call.write(discovery_pb2.DiscoveryRequest(node=node, type_url=type_url))
        await call.write(
            discovery_pb2.DiscoveryRequest(type_url=types.ROUTE, resource_names=[HTTP_ROUTES])
        )
    return channel, call


async def _route_versions(control_plane: ControlPlaneProcess) -> dict[str, tuple[str, str]]:
    """node id → (RDS version last sent, last ACKed), from the admin API."""
    return {
        node.node_id: (status.sent_version, status.acked_version)
        for node in await control_plane.list_nodes()
        for status in node.types
        if status.type_url == types.ROUTE
    }


async def test_stalled_streams_delay_no_envoy_and_do_not_grow_memory(
    stage: Stage, control_planes: ControlPlanes, envoy_factory: EnvoyFactory
) -> None:
    services, generations, streams = 400, 20, 16
    stage.config.write("bulk.yaml", *_many_services(services))
    control_plane = await started(control_planes("cp"))
    envoy = await serving_envoy(envoy_factory, stage.bootstrap(control_plane), stage)
    credentials = stage.pki.channel_credentials()
    stalled = [
        await _stalled_stream(
            control_plane.xds_address, credentials, delta=index % 2 == 0, node_id=f"stalled-{index}"
        )
        for index in range(streams)
    ]
    try:

        async def all_connected() -> bool:
            return len(await control_plane.nodes()) == 1 + len(stalled)

        await wait_until(all_connected, timeout=10, message="the stalled streams connected")
        latencies: list[float] = []
        rss: list[int] = []
        async with SteadyLoad(stage.target, authority="a.example.com") as load:
            for generation in range(generations):
                # Every generation renames every host: all routes change, so
                # each response is the size of the whole route configuration.
                changed = time.monotonic()
                stage.config.write(
                    "bulk-ingress.yaml", ingress("bulk", _bulk_rules(services, generation))
                )
                await routes(stage, f"generation-{generation}.example.com", "b", within_seconds=10)
                latencies.append(time.monotonic() - changed)
                rss.append(control_plane.rss_bytes())
        routes_json = len(envoy.admin_get("/config_dump?resource=dynamic_route_configs"))
        versions = await _route_versions(control_plane)
        report = load.report
        log.info(
            "change to Envoy %s s; control plane RSS %s KiB; routes %d kB as JSON; "
            "RDS versions %s; %s",
            [round(value, 2) for value in latencies],
            [value // 1024 for value in rss],
            routes_json // 1000,
            versions,
            report.summary(),
        )
        assert report.failed == 0, report.summary()
        # The real Envoy keeps getting every change promptly.
        assert max(latencies) < 5.0, latencies
        assert statistics.median(latencies) < 1.5, latencies
        # The control plane's memory levels off. Had it queued every route
        # configuration for every stalled stream, each generation would add
        # streams x the configuration (about 4 MB here), without end.
        mib = 1024 * 1024
        kib = [value // 1024 for value in rss]
        assert max(rss) - rss[0] < 40 * mib, kib
        late = generations * 3 // 4
        assert max(rss[late:]) - max(rss[:late]) < 12 * mib, kib
        # The stalled streams are still open, not dropped to make room, and
        # they are stalled: their route versions stopped, far behind Envoy's.
        assert len(await control_plane.nodes()) == 1 + len(stalled)
        _sent, envoy_acked = versions["envoy-1"]
        behind = [node for node, (sent, _) in versions.items() if sent != envoy_acked]
        assert len(behind) == len(stalled), versions
    finally:
        for channel, call in stalled:
            call.cancel()
            await channel.close(None)
