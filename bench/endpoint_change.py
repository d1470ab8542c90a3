"""Endpoint change: an EndpointSlice write → the new host taking calls through Envoy.

Against the real API server (bench/kube.py), with N Services (10k;
`--quick`: 1k), each with an Ingress for its own host and an EndpointSlice
of 10 ready pods on loopback addresses that are never called (as in
cold-start), all written straight into etcd before the control plane and
Envoy start. The control plane (`--source kubernetes`) and one Envoy are
started once per case and stay up; setup is outside every timing.

A run takes K of the Services (50; `--quick`: 20), in turn: their slice is
emptied first (Envoy then answers 503, no healthy upstream), and once Envoy
says so, the slice is rewritten with one new endpoint, the grpc-go interop
server on 127.0.0.1. The time is from just before that write until the
first successful call to the Service's host through Envoy: the host has
appeared in Envoy and takes traffic.

The slice is written into etcd, as the API server refuses loopback
endpoints; the API server's watch carries it to the control plane as it
would any write (endpoint controllers write through the API, which adds
its own validation and storage time, not measured here).

Target (issue 7): p99 ≤ 50 ms at 10k Services. There is no yardstick;
route propagation's figures are the closest comparison (a whole new route
rather than the EDS fast path).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench import envoy, grpc_probe, kube, kube_stack, kube_workload
from bench.kube import LocalApiServer
from bench.procs import LOOPBACK, Child, free_port, repo_tool, wait_until_accepting
from bench.results import CaseResult, MetricSpec, TargetResult, at_most, percentile
from bench.workload import host_name, pod_address

NAME: Final = "endpoint-change"
SIZES: Final = (10000,)
QUICK_SIZES: Final = (1000,)
CHANGES: Final = 50
QUICK_CHANGES: Final = 20
ENDPOINTS_PER_SERVICE: Final = 10
TARGET_SERVICES: Final = 10000
TARGET_P99_MS: Final = 50.0
CHANGE_TIMEOUT_SECONDS: Final = 10.0
PROBE_INTERVAL_SECONDS: Final = 0.001
# Pods that are configured, never called (nothing listens on the discard port).
IDLE_POD_PORT: Final = 9

METRICS: Final[Mapping[str, MetricSpec]] = {
    "p50_ms": MetricSpec("ms", "EndpointSlice write → first call through the new host, p50"),
    "p99_ms": MetricSpec("ms", "EndpointSlice write → first call through the new host, p99"),
    "max_ms": MetricSpec("ms", "EndpointSlice write → first call through the new host, slowest"),
    "removal_p50_ms": MetricSpec("ms", "slice emptied → Envoy answers 503 (setup step), p50"),
    "cp_cpu_ms_per_change": MetricSpec("ms", "control plane CPU time per endpoint change"),
    "timeouts": MetricSpec("changes", f"hosts not taking calls {CHANGE_TIMEOUT_SECONDS:g} s after"),
}


@dataclass
class EndpointChangeCase:
    services: int
    changes: int
    _kube: LocalApiServer | None = None
    _backend: Child | None = None
    _backend_port: int = 0
    _server: Child | None = None
    _proxy: Child | None = None
    _target: str = ""

    @property
    def label(self) -> str:
        return f"{self.services} Services"

    @property
    def params(self) -> Mapping[str, Any]:
        return {
            "services": self.services,
            "endpoints_per_service": ENDPOINTS_PER_SERVICE,
            "changes_per_run": self.changes,
            "source": "kubernetes (local kube-apiserver + etcd); slices written into etcd",
            "envoy_concurrency": 1,
        }

    def _timeout(self) -> float:
        return 120.0 + self.services * 0.03

    def prepare(self, workdir: Path) -> dict[str, Any]:
        interop = repo_tool("grpc-interop-server")
        if interop is None:
            raise FileNotFoundError("no grpc-interop-server: run bench/install-deps.sh")
        self._backend_port = free_port()
        self._backend = Child.spawn(
            "backend",
            [interop, "-port", str(self._backend_port)],
            log_path=workdir / "backend.log",
        )
        wait_until_accepting(self._backend, self._backend_port, within_seconds=30)
        self._kube = LocalApiServer(workdir / "kube")
        self._kube.start()
        kube_workload.create_namespace_and_class(self._kube.api)
        started = time.perf_counter()
        items: list[tuple[str, Mapping[str, Any]]] = []
        for index in range(self.services):
            pods = [
                pod_address(index, pod, ENDPOINTS_PER_SERVICE)
                for pod in range(ENDPOINTS_PER_SERVICE)
            ]
            items += [
                (kube_workload.SERVICES, kube_workload.service(index)),
                (
                    kube_workload.ENDPOINT_SLICES,
                    kube_workload.endpoint_slice(index, addresses=pods, port=IDLE_POD_PORT),
                ),
                (kube_workload.INGRESSES, kube_workload.ingress(index)),
            ]
        self._kube.etcd.put_many(items)
        written = time.perf_counter() - started
        self._server, ports = kube_stack.start_control_plane(self._kube, workdir / "cp")
        proxy = kube_stack.start_envoy(ports, workdir / "envoy", node_id="bench-endpoints")
        self._proxy = proxy.process
        live = envoy.wait_live(
            proxy.process,
            proxy.admin_port,
            envoy.Expected(clusters=self.services + 1, listeners=1),
            within_seconds=self._timeout(),
        )
        self._target = f"{LOOPBACK}:{ports.http}"
        return {"setup_write_s": written, "envoy_live_s": live}

    def close(self) -> None:
        for child in (self._proxy, self._server):
            if child is not None:
                child.stop()
        self._proxy = self._server = None
        if self._kube is not None:
            self._kube.stop()
            self._kube = None
        if self._backend is not None:
            self._backend.stop()
            self._backend = None

    def _chosen(self) -> list[int]:
        # Spread over the whole range (a stride coprime with most sizes), the
        # same every run so runs are comparable.
        stride = max(1, self.services // self.changes)
        return [(1 + k * stride) % self.services for k in range(self.changes)]

    def run_once(self, index: int, workdir: Path) -> dict[str, float]:
        assert self._kube is not None and self._server is not None and self._proxy is not None
        latencies: list[float] = []
        removals: list[float] = []
        timeouts = 0
        cpu = 0.0
        for service in self._chosen():
            with grpc_probe.Prober(self._target, authority=host_name(service)) as prober:
                removals.append(self._write_and_wait(service, [], prober, want_ok=False))
                before = self._server.cpu_seconds_precise()
                took = self._write_and_wait(service, [LOOPBACK], prober, want_ok=True)
                cpu += self._server.cpu_seconds_precise() - before
            if took >= CHANGE_TIMEOUT_SECONDS:
                timeouts += 1
                if timeouts > 3:
                    raise TimeoutError(f"{timeouts} new hosts never took calls")
            latencies.append(took)
            self._server.check_alive()
            self._proxy.check_alive()
        return {
            "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000,
            "max_ms": max(latencies) * 1000,
            "removal_p50_ms": percentile(removals, 50) * 1000,
            "cp_cpu_ms_per_change": cpu / len(latencies) * 1000,
            "timeouts": timeouts,
        }

    def _write_and_wait(
        self, service: int, addresses: list[str], prober: grpc_probe.Prober, *, want_ok: bool
    ) -> float:
        """Write the slice; seconds until the host's calls succeed (or fail, `want_ok` False)."""
        assert self._kube is not None
        port = self._backend_port if addresses else IDLE_POD_PORT
        slice_ = kube_workload.endpoint_slice(service, addresses=addresses, port=port)
        started = time.perf_counter()
        self._kube.etcd.put_many([(kube_workload.ENDPOINT_SLICES, slice_)])
        while True:
            ok = prober.call().outcome is grpc_probe.Outcome.OK
            now = time.perf_counter()
            if ok == want_ok or now - started > CHANGE_TIMEOUT_SECONDS:
                return min(now - started, CHANGE_TIMEOUT_SECONDS)
            time.sleep(PROBE_INTERVAL_SECONDS)


class EndpointChange:
    name = NAME
    title = "Endpoint change: EndpointSlice write → the new host taking calls through Envoy"

    @property
    def metrics(self) -> Mapping[str, MetricSpec]:
        return METRICS

    def cases(self, *, quick: bool) -> Sequence[EndpointChangeCase]:
        if quick:
            return [EndpointChangeCase(services=n, changes=QUICK_CHANGES) for n in QUICK_SIZES]
        return [EndpointChangeCase(services=n, changes=CHANGES) for n in SIZES]

    def available(self) -> str | None:
        if repo_tool("grpc-interop-server") is None:
            return "grpc-interop-server not built: run bench/install-deps.sh"
        return kube.missing()

    def targets(self, cases: Sequence[CaseResult]) -> list[TargetResult]:
        at_target = [c for c in cases if c.params.get("services") == TARGET_SERVICES]
        case = at_target[0] if at_target else None
        return [
            at_most(
                name="endpoint change p99 at 10k Services",
                description=(
                    f"endpoint change p99 ≤ {TARGET_P99_MS:g} ms at {TARGET_SERVICES} Services"
                ),
                value=case.median("p99_ms") if case else None,
                threshold=TARGET_P99_MS,
                unit="ms",
                note="" if case else f"{TARGET_SERVICES} Services not run (--quick or a failure)",
            )
        ]
