"""Fan-out: one change, pushed to 1, 10 and 50 Envoys, until every one has ACKed it.

Against the real API server (bench/kube.py): `xds-ingress serve --source
kubernetes` with 100 Services routed by their Ingresses (written into etcd
before it starts), and E real Envoys (`--concurrency 1`, delta ADS, one node
group) connected to it, started once per case. A run writes one new
Ingress (its Service and EndpointSlice are written first and left to
settle): a new route, cluster and endpoints, so every xDS type but the
listener changes. The clock runs from the wall-clock time just before that
POST to the time the control plane recorded the last Envoy's ACK of the new
routes (ListNodes' per-type `acked_at`; the bench and the control plane
share the machine's clock). ListNodes is polled over one long-lived channel
only to learn that every Envoy has ACKed the new routes and has nothing
sent left unACKed: how often it is polled no longer limits the resolution.

Also: control-plane CPU seconds per push, from the child process's own
counters from the POST until the polling saw every Envoy ACKed, less what
the ListNodes polling itself costs (measured per case, idle, and
subtracted per poll); and the Envoys' own CPU over the same interval,
which on a small machine is most of what a push costs.

Yardstick: the same push to one Envoy, in the same invocation. Target
(issue 7): 50 Envoys all ACKed in ≤ 2x the time of one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bench import envoy, kube, kube_stack, kube_workload
from bench.kube import LocalApiServer
from bench.kube_stack import RunningEnvoy
from bench.procs import Child
from bench.results import CaseResult, MetricSpec, TargetResult, at_most
from bench.workload import pod_address
from xds_ingress.admin.v1 import admin_pb2

NAME: Final = "fan-out"
SIZES: Final = (1, 10, 50)
QUICK_SIZES: Final = (1, 5)
TARGET_ENVOYS: Final = 50
TARGET_RATIO: Final = 2.0
SERVICES: Final = 100
ENDPOINTS_PER_SERVICE: Final = 10
IDLE_POD_PORT: Final = 9
PUSH_TIMEOUT_SECONDS: Final = 30.0
# The times come from the control plane; polling only has to notice the
# end, and each poll costs the event loop being measured.
POLL_INTERVAL_SECONDS: Final = 0.05
CALIBRATION_POLLS: Final = 50
IDLE_SAMPLE_SECONDS: Final = 1.0
# After the Service and slice of the next run's route are written: long
# enough for the control plane's holdoff and any rebuild to be over.
SETTLE_SECONDS: Final = 1.0

METRICS: Final[Mapping[str, MetricSpec]] = {
    "all_acked_ms": MetricSpec("ms", "Ingress write → every Envoy ACKed the new routes"),
    "first_acked_ms": MetricSpec("ms", "Ingress write → the first Envoy ACKed them"),
    "clusters_acked_ms": MetricSpec("ms", "Ingress write → every Envoy ACKed the new cluster"),
    "endpoints_acked_ms": MetricSpec("ms", "Ingress write → every Envoy ACKed its endpoints"),
    "first_sent_ms": MetricSpec("ms", "Ingress write → the new routes sent to the first Envoy"),
    "last_sent_ms": MetricSpec("ms", "Ingress write → the new routes sent to the last Envoy"),
    "cp_cpu_ms_per_push": MetricSpec("ms", "control plane CPU time for the push (polling less)"),
    "cp_cpu_ms_per_envoy": MetricSpec("ms", "control plane CPU time per push per Envoy"),
    "envoys_cpu_ms_per_push": MetricSpec("ms", "CPU time of all the Envoys together for the push"),
    "polls": MetricSpec("calls", "ListNodes polls until all were seen ACKed"),
}


@dataclass
class FanOutCase:
    envoys: int
    _kube: LocalApiServer | None = None
    _server: Child | None = None
    _admin: kube_stack.AdminClient | None = None
    _proxies: list[RunningEnvoy] = field(default_factory=list)
    _cpu_per_poll: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.envoys} Envoy" + ("s" if self.envoys != 1 else "")

    @property
    def params(self) -> Mapping[str, Any]:
        return {
            "envoys": self.envoys,
            "services": SERVICES,
            "source": "kubernetes (local kube-apiserver + etcd)",
            "envoy_concurrency": 1,
            "xds": "delta ADS, one node group",
        }

    def prepare(self, workdir: Path) -> dict[str, Any]:
        self._kube = LocalApiServer(workdir / "kube")
        self._kube.start()
        kube_workload.create_namespace_and_class(self._kube.api)
        items: list[tuple[str, Mapping[str, Any]]] = []
        for index in range(SERVICES):
            items += _service_objects(index)
            items.append((kube_workload.INGRESSES, kube_workload.ingress(index)))
        self._kube.etcd.put_many(items)
        self._server, ports = kube_stack.start_control_plane(self._kube, workdir / "cp")
        self._admin = kube_stack.AdminClient(ports.admin)
        started = time.perf_counter()
        for number in range(self.envoys):
            self._proxies.append(
                kube_stack.start_envoy(
                    ports, workdir / f"envoy-{number}", node_id=f"bench-fan-out-{number}"
                )
            )
        for proxy in self._proxies:
            envoy.wait_live(
                proxy.process,
                proxy.admin_port,
                envoy.Expected(clusters=SERVICES + 1, listeners=1),
                within_seconds=60 + 2 * self.envoys,
            )
        kube_stack.wait_nodes_acked(
            self._admin, self._node_ids(), within_seconds=60, server=self._server
        )
        all_live = time.perf_counter() - started
        before = self._server.cpu_seconds_precise()
        for _ in range(CALIBRATION_POLLS):
            self._admin.list_nodes()
        self._cpu_per_poll = (self._server.cpu_seconds_precise() - before) / CALIBRATION_POLLS
        rss = sum(proxy.process.peak_rss_bytes() for proxy in self._proxies)
        idle_before = self._envoys_cpu()
        time.sleep(IDLE_SAMPLE_SECONDS)
        idle = (self._envoys_cpu() - idle_before) / IDLE_SAMPLE_SECONDS
        return {
            "all_envoys_live_s": all_live,
            "cp_cpu_ms_per_poll": self._cpu_per_poll * 1000,
            "envoys_peak_rss_mib_total": rss / 1024 / 1024,
            # What the Envoys spend doing nothing, to compare with a push's.
            "envoys_idle_cpu_ms_per_s": idle * 1000,
        }

    def _envoys_cpu(self) -> float:
        # With the control plane they share the machine's cores: what they
        # spend on a push bounds how fast all of them can have it.
        return sum(proxy.process.cpu_seconds_precise() for proxy in self._proxies)

    def _node_ids(self) -> set[str]:
        return {proxy.node_id for proxy in self._proxies}

    def close(self) -> None:
        for proxy in self._proxies:
            proxy.process.stop()
        self._proxies.clear()
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._kube is not None:
            self._kube.stop()
            self._kube = None

    def run_once(self, index: int, workdir: Path) -> dict[str, float]:
        assert self._kube is not None and self._server is not None, "prepare() first"
        assert self._admin is not None, "prepare() first"
        route = SERVICES + index
        self._kube.etcd.put_many(_service_objects(route))
        time.sleep(SETTLE_SECONDS)
        node_ids = self._node_ids()
        before = kube_stack.type_times(self._admin.list_nodes())
        old = {before[node_id].version if node_id in before else "" for node_id in node_ids}
        if len(old) != 1:
            raise RuntimeError(f"Envoys disagree on the routes before the push: {before}")
        old_version = old.pop()
        envoys_before = self._envoys_cpu()
        cpu_before = self._server.cpu_seconds_precise()
        started = time.monotonic()
        written = time.time()
        self._kube.api.create(kube_workload.INGRESS_PATH, kube_workload.ingress(route))
        polls = 0
        while True:
            nodes = self._admin.list_nodes()
            polls += 1
            if kube_stack.all_acked(nodes, node_ids, not_version=old_version):
                break
            if time.monotonic() - started > PUSH_TIMEOUT_SECONDS:
                raise TimeoutError(f"not every Envoy ACKed within {PUSH_TIMEOUT_SECONDS} s")
            time.sleep(POLL_INTERVAL_SECONDS)
        cpu = self._server.cpu_seconds_precise() - cpu_before - polls * self._cpu_per_poll
        envoys_cpu = self._envoys_cpu() - envoys_before
        for proxy in self._proxies:
            proxy.process.check_alive()
        pushed = _times_since(written, nodes, node_ids, kube_stack.ROUTES_TYPE)
        acked = [times.acked_at - written for times in pushed]
        sent = [times.sent_at - written for times in pushed]
        # Every run adds a cluster with its endpoints, so the last response
        # of both types is this push's: the phases of make before break.
        clusters = _times_since(written, nodes, node_ids, kube_stack.CLUSTERS_TYPE)
        endpoints = _times_since(written, nodes, node_ids, kube_stack.ENDPOINTS_TYPE)
        return {
            "all_acked_ms": max(acked) * 1000,
            "first_acked_ms": min(acked) * 1000,
            "clusters_acked_ms": max(t.acked_at - written for t in clusters) * 1000,
            "endpoints_acked_ms": max(t.acked_at - written for t in endpoints) * 1000,
            "first_sent_ms": min(sent) * 1000,
            "last_sent_ms": max(sent) * 1000,
            "cp_cpu_ms_per_push": max(cpu, 0.0) * 1000,
            "cp_cpu_ms_per_envoy": max(cpu, 0.0) * 1000 / self.envoys,
            "envoys_cpu_ms_per_push": envoys_cpu * 1000,
            "polls": polls,
        }


def _times_since(
    written: float, nodes: list[admin_pb2.Node], node_ids: set[str], type_url: str
) -> list[kube_stack.TypeTimes]:
    """Each Envoy's send and ACK times of `type_url`, checked to be this push's."""
    found = [
        t for node_id, t in kube_stack.type_times(nodes, type_url).items() if node_id in node_ids
    ]
    if len(found) != len(node_ids) or any(
        t.sent_at < written or t.acked_at < t.sent_at for t in found
    ):
        raise RuntimeError(f"{type_url}: not sent and ACKed after the write ({written}): {found}")
    return found


def _service_objects(index: int) -> list[tuple[str, Mapping[str, Any]]]:
    pods = [pod_address(index, pod, ENDPOINTS_PER_SERVICE) for pod in range(ENDPOINTS_PER_SERVICE)]
    return [
        (kube_workload.SERVICES, kube_workload.service(index)),
        (
            kube_workload.ENDPOINT_SLICES,
            kube_workload.endpoint_slice(index, addresses=pods, port=IDLE_POD_PORT),
        ),
    ]


class FanOut:
    name = NAME
    title = "Fan-out: one change pushed to 1, 10, 50 Envoys until all have ACKed"

    @property
    def metrics(self) -> Mapping[str, MetricSpec]:
        return METRICS

    def cases(self, *, quick: bool) -> Sequence[FanOutCase]:
        return [FanOutCase(envoys=n) for n in (QUICK_SIZES if quick else SIZES)]

    def available(self) -> str | None:
        return kube.missing()

    def targets(self, cases: Sequence[CaseResult]) -> list[TargetResult]:
        by_size = {case.params.get("envoys"): case for case in cases}
        one = by_size.get(1)
        many = by_size.get(TARGET_ENVOYS)
        one_ms = one.median("all_acked_ms") if one else None
        many_ms = many.median("all_acked_ms") if many else None
        ratio = None if one_ms is None or many_ms is None or not one_ms else many_ms / one_ms
        largest = max(
            (c for c in cases if c.metrics), key=lambda c: c.params["envoys"], default=None
        )
        note = ""
        if ratio is None:
            note = f"1 and {TARGET_ENVOYS} Envoys not both run (--quick or a failure)"
            if largest is not None and one_ms and largest.params["envoys"] > 1:
                largest_ms = largest.median("all_acked_ms")
                if largest_ms is not None:
                    note += f"; {largest.label}: {largest_ms / one_ms:.2f}x one"
        return [
            at_most(
                name="fan-out to 50 Envoys",
                description=(
                    f"{TARGET_ENVOYS} Envoys all ACKed in ≤ {TARGET_RATIO:g}x the time of one"
                ),
                value=ratio,
                threshold=TARGET_RATIO,
                unit="x",
                note=note,
            )
        ]
