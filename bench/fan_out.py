"""Fan-out: one change, pushed to 1, 10 and 50 Envoys, until every one has ACKed it.

Against the real API server (bench/kube.py): `xds-ingress serve --source
kubernetes` with 100 Services routed by their Ingresses (written into etcd
before it starts), and E real Envoys (`--concurrency 1`, delta ADS, one node
group) connected to it, started once per case. A run writes one new
Ingress (its Service and EndpointSlice are written first and left to
settle): a new route, cluster and endpoints, so every xDS type but the
listener changes. The clock runs from just before that POST until the
control plane's admin API (ListNodes) shows every Envoy with the new routes
version ACKed and nothing sent left unACKed.

Also: control-plane CPU seconds per push, from the child process's own
counters over the same interval, less what the ListNodes polling itself
costs (measured per case, idle, and subtracted per poll).

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

NAME: Final = "fan-out"
SIZES: Final = (1, 10, 50)
QUICK_SIZES: Final = (1, 5)
TARGET_ENVOYS: Final = 50
TARGET_RATIO: Final = 2.0
SERVICES: Final = 100
ENDPOINTS_PER_SERVICE: Final = 10
IDLE_POD_PORT: Final = 9
PUSH_TIMEOUT_SECONDS: Final = 30.0
POLL_INTERVAL_SECONDS: Final = 0.005
CALIBRATION_POLLS: Final = 50
# After the Service and slice of the next run's route are written: long
# enough for the control plane's holdoff and any rebuild to be over.
SETTLE_SECONDS: Final = 1.0

METRICS: Final[Mapping[str, MetricSpec]] = {
    "all_acked_ms": MetricSpec("ms", "Ingress write → every Envoy ACKed the new routes"),
    "first_acked_ms": MetricSpec("ms", "Ingress write → the first Envoy ACKed them"),
    "cp_cpu_ms_per_push": MetricSpec("ms", "control plane CPU time for the push (polling less)"),
    "cp_cpu_ms_per_envoy": MetricSpec("ms", "control plane CPU time per push per Envoy"),
    "polls": MetricSpec("calls", "ListNodes polls during the push"),
}


@dataclass
class FanOutCase:
    envoys: int
    _kube: LocalApiServer | None = None
    _server: Child | None = None
    _admin_port: int = 0
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
        self._admin_port = ports.admin
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
            self._admin_port, self._node_ids(), within_seconds=60, server=self._server
        )
        all_live = time.perf_counter() - started
        before = self._server.cpu_seconds_precise()
        for _ in range(CALIBRATION_POLLS):
            kube_stack.list_nodes(self._admin_port)
        self._cpu_per_poll = (self._server.cpu_seconds_precise() - before) / CALIBRATION_POLLS
        rss = sum(proxy.process.peak_rss_bytes() for proxy in self._proxies)
        return {
            "all_envoys_live_s": all_live,
            "cp_cpu_ms_per_poll": self._cpu_per_poll * 1000,
            "envoys_peak_rss_mib_total": rss / 1024 / 1024,
        }

    def _node_ids(self) -> set[str]:
        return {proxy.node_id for proxy in self._proxies}

    def close(self) -> None:
        for proxy in self._proxies:
            proxy.process.stop()
        self._proxies.clear()
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._kube is not None:
            self._kube.stop()
            self._kube = None

    def run_once(self, index: int, workdir: Path) -> dict[str, float]:
        assert self._kube is not None and self._server is not None, "prepare() first"
        route = SERVICES + index
        self._kube.etcd.put_many(_service_objects(route))
        time.sleep(SETTLE_SECONDS)
        node_ids = self._node_ids()
        versions = kube_stack.routes_versions(kube_stack.list_nodes(self._admin_port))
        old = {versions.get(node_id, "") for node_id in node_ids}
        if len(old) != 1:
            raise RuntimeError(f"Envoys disagree on the routes before the push: {versions}")
        old_version = old.pop()
        cpu_before = self._server.cpu_seconds_precise()
        started = time.perf_counter()
        self._kube.api.create(kube_workload.INGRESS_PATH, kube_workload.ingress(route))
        first: float | None = None
        polls = 0
        while True:
            nodes = kube_stack.list_nodes(self._admin_port)
            polls += 1
            now = time.perf_counter()
            if first is None and any(
                version not in ("", old_version)
                for version in kube_stack.routes_versions(nodes).values()
            ):
                first = now - started
            if kube_stack.all_acked(nodes, node_ids, not_version=old_version):
                break
            if now - started > PUSH_TIMEOUT_SECONDS:
                raise TimeoutError(f"not every Envoy ACKed within {PUSH_TIMEOUT_SECONDS} s")
            time.sleep(POLL_INTERVAL_SECONDS)
        elapsed = now - started
        cpu = self._server.cpu_seconds_precise() - cpu_before - polls * self._cpu_per_poll
        for proxy in self._proxies:
            proxy.process.check_alive()
        return {
            "all_acked_ms": elapsed * 1000,
            "first_acked_ms": (elapsed if first is None else first) * 1000,
            "cp_cpu_ms_per_push": max(cpu, 0.0) * 1000,
            "cp_cpu_ms_per_envoy": max(cpu, 0.0) * 1000 / self.envoys,
            "polls": polls,
        }


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
