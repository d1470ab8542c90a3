"""Data plane: unary gRPC calls through the Envoy xds-ingress configured, against
the same Envoy with a hand-tuned static config, nginx `grpc_pass`, and the
backend called directly (the floor).

Backend: the grpc-go interop server (grpc.testing.TestService), which is not
the bottleneck the Python demo backend would be. Load: ghz. Both are built
by bench/install-deps.sh; nginx is Debian's (nginx-light), and is skipped
when missing. Envoy runs with `--concurrency 1`, nginx with one worker.

The machine has two cores: ghz gets CPU 0 to itself, and the backend and
the proxies share CPU 1, so a proxy's cost shows as throughput lost. Each
proxy's CPU time per call is reported too, which depends less on that
arrangement.

Each run measures every target's maximum rate (ghz unthrottled), then
every target (the backend directly included) at 25% of the xds-ingress
maximum of that run; latency "added" is the target's minus the backend's at
the same load. Targets go in a rotating order from run to run. The 25% load
is taken in QUARTER_ROUNDS short rounds, every target once per round, and
each target's p50 and p99 are taken over the calls of all its rounds
(ghz's per-call latencies, nearest rank): the backend's latency and a
proxy's are then sampled over the same stretch of time, not a minute
apart on a machine whose speed moves by the minute.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import psutil
import yaml

from bench import envoy, folder_stack, ghz, h2load, peer_configs
from bench.procs import (
    LOOPBACK,
    Child,
    free_port,
    repo_tool,
    spawn_interop_server,
    wait_until_accepting,
)
from bench.results import (
    CaseResult,
    MetricSpec,
    TargetResult,
    at_least,
    at_most,
    not_judged,
    percentile,
)

NAME: Final = "data-plane"
# Replies per server-streaming call in the streaming case.
STREAM_MESSAGES: Final = 10
# The second backend: nginx answering every call with an empty gRPC message.
NGINX_H2C: Final = "nginx-h2c"
HOST: Final = "grpc.bench.local"
LOAD_CPU: Final = (0,)
SERVER_CPU: Final = (1,)
PROXIES: Final = ("static", "xds", "nginx")
# The 25% load runs in this many rounds, each target in turn in each round.
QUARTER_ROUNDS: Final = 4
TARGETS: Final = ("direct", *PROXIES)
NAMES: Final = {
    "direct": "backend directly",
    "static": "Envoy, hand-tuned static config",
    "xds": "Envoy configured by xds-ingress",
    "nginx": "nginx grpc_pass",
}


def _metric_specs() -> dict[str, MetricSpec]:
    specs = {
        "xds_vs_static": MetricSpec("x", "xds-ingress Envoy max rate / hand-tuned Envoy's"),
        "xds_vs_nginx": MetricSpec("x", "xds-ingress Envoy max rate / nginx's"),
        "xds_vs_direct": MetricSpec("x", "xds-ingress Envoy max rate / the backend's directly"),
        "static_vs_direct": MetricSpec("x", "hand-tuned Envoy max rate / the backend's directly"),
        "rate_25_rps": MetricSpec("calls/s", "the 25% load: a quarter of xds-ingress's max"),
    }
    for target in TARGETS:
        name = NAMES[target]
        specs[f"{target}_rps"] = MetricSpec("calls/s", f"{name}: max rate (OK calls)")
        for load in ("100", "25"):
            for pct in ("p50", "p99"):
                specs[f"{target}_{pct}_{load}_ms"] = MetricSpec(
                    "ms", f"{name}: {pct} latency at {load}% load"
                )
        specs[f"{target}_errors"] = MetricSpec("calls", f"{name}: failed calls (not cut at stop)")
        specs[f"{target}_mean_100_ms"] = MetricSpec(
            "ms", f"{name}: mean latency at 100% load (h2load)"
        )
        specs[f"{target}_together_25"] = MetricSpec(
            "calls", f"{name}: calls started together at 25% load, per call (h2load's bursts)"
        )
    for target in PROXIES:
        name = NAMES[target]
        for load in ("100", "25"):
            for pct in ("p50", "p99"):
                specs[f"{target}_added_{pct}_{load}_ms"] = MetricSpec(
                    "ms", f"{name}: {pct} added over direct at {load}% load"
                )
        specs[f"{target}_cpu_us_per_call"] = MetricSpec(
            "µs", f"{name}: proxy CPU time per call at max rate"
        )
    return specs


METRICS: Final[Mapping[str, MetricSpec]] = _metric_specs()


@dataclass
class _Target:
    name: str
    address: str
    authority: str | None = None
    # The proxy whose CPU time is counted (None: the backend itself).
    process: Child | None = None


@dataclass
class UnaryCase:
    payload_bytes: int
    seconds: float
    concurrency: int = 32
    connections: int = 4
    # 0: unary calls; N: server-streaming calls (StreamingOutputCall) of N
    # replies of `payload_bytes` each, through the same proxies.
    stream_messages: int = 0
    # INTEROP: the grpc-go interop server; NGINX_H2C: nginx answering every
    # call with an empty message (unary only: it streams nothing).
    backend: str = "interop"
    _children: list[Child] = field(default_factory=list)
    _targets: dict[str, _Target] = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.stream_messages:
            return f"server streaming {self.stream_messages}x{self.payload_bytes} B"
        if self.backend == NGINX_H2C:
            return f"unary {self.payload_bytes} B, nginx h2c backend"
        return f"unary {self.payload_bytes} B"

    @property
    def call(self) -> str:
        return ghz.STREAMING_CALL if self.stream_messages else ghz.UNARY_CALL

    @property
    def data(self) -> str:
        if self.stream_messages:
            return ghz.streaming_payload(self.payload_bytes, self.stream_messages)
        return ghz.unary_payload(self.payload_bytes)

    @property
    def params(self) -> Mapping[str, Any]:
        return {
            "call": self.call,
            "replies_per_call": max(self.stream_messages, 1),
            "backend": (
                "nginx h2c, an empty reply to every call"
                if self.backend == NGINX_H2C
                else "grpc-go interop server"
            ),
            "payload_bytes": self.payload_bytes,
            "seconds_per_measurement": self.seconds,
            "concurrency": self.concurrency,
            "connections": self.connections,
            "envoy_concurrency": 1,
            "nginx_workers": 1,
            "load_cpus": list(LOAD_CPU),
            "server_cpus": list(SERVER_CPU),
        }

    def _spawn(self, child: Child) -> Child:
        self._children.append(child)
        return child

    def _start_backend(self, workdir: Path) -> int:
        """The backend on SERVER_CPU; returns its port."""
        log_path = workdir / "backend.log"
        if self.backend == NGINX_H2C:
            backend_port = free_port()
            config = peer_configs.nginx_empty_grpc(workdir=workdir, listen_port=backend_port)
            argv: list[str | Path] = ["nginx", "-c", config, "-p", workdir]
            argv += ["-e", workdir / "error.log"]
            backend = Child.spawn("backend", argv, log_path=log_path, cpus=SERVER_CPU)
        else:
            backend, backend_port = spawn_interop_server(log_path, cpus=SERVER_CPU)
        self._spawn(backend)
        wait_until_accepting(backend, backend_port, within_seconds=30)
        return backend_port

    def prepare(self, workdir: Path) -> dict[str, Any]:
        backend_port = self._start_backend(workdir / "backend")
        self._targets["direct"] = _Target("direct", f"{LOOPBACK}:{backend_port}")
        self._start_tuned_envoy(workdir / "static", backend_port)
        self._start_xds(workdir / "xds", backend_port)
        notes: dict[str, Any] = {"envoy": "--concurrency 1"}
        if shutil.which("nginx") is not None:
            self._start_nginx(workdir / "nginx", backend_port)
        else:
            notes["nginx"] = "not installed (apt-get install nginx-light); skipped"
        for target in self._targets.values():
            check = ghz.run(
                target=target.address,
                authority=target.authority,
                load=ghz.Load(seconds=1, max_calls=200, concurrency=4, connections=1),
                payload_bytes=self.payload_bytes,
                call=self.call,
                data=self.data,
            )
            if check.errors or check.ok == 0:
                raise RuntimeError(f"{target.name}: warm-up calls failed: {check.error_kinds}")
        return notes

    def _start_tuned_envoy(self, workdir: Path, backend_port: int) -> None:
        listen, admin = free_port(), free_port()
        config = envoy.write_bootstrap(
            peer_configs.tuned_envoy(
                listen_port=listen, admin_port=admin, backend_port=backend_port
            ),
            workdir / "bootstrap.json",
        )
        proxy = self._spawn(
            envoy.start(name="tuned Envoy", config=config, workdir=workdir, cpus=SERVER_CPU)
        )
        envoy.wait_live(proxy, admin, envoy.Expected(clusters=1, listeners=1), within_seconds=30)
        self._targets["static"] = _Target("static", f"{LOOPBACK}:{listen}", process=proxy)

    def _start_xds(self, workdir: Path, backend_port: int) -> None:
        stack = folder_stack.start(
            workdir,
            objects_yaml=backend_objects(backend_port),
            node_id="bench-xds",
            # The backend's cluster and the bootstrap's xds_cluster.
            expected=envoy.Expected(clusters=2, listeners=1),
            register=self._spawn,
            control_plane_cpus=LOAD_CPU,
            envoy_cpus=SERVER_CPU,
        )
        self._targets["xds"] = _Target(
            "xds", f"{LOOPBACK}:{stack.ports.http}", authority=HOST, process=stack.envoy
        )

    def _start_nginx(self, workdir: Path, backend_port: int) -> None:
        listen = free_port()
        config = peer_configs.nginx_grpc(
            workdir=workdir, listen_port=listen, backend_port=backend_port
        )
        nginx = self._spawn(
            Child.spawn(
                "nginx",
                ["nginx", "-c", config, "-p", workdir, "-e", workdir / "error.log"],
                log_path=workdir / "nginx.log",
                cpus=SERVER_CPU,
            )
        )
        wait_until_accepting(nginx, listen, within_seconds=30)
        self._targets["nginx"] = _Target("nginx", f"{LOOPBACK}:{listen}", process=nginx)

    def close(self) -> None:
        for child in reversed(self._children):
            child.stop()
        self._children.clear()
        self._targets.clear()

    def run_once(self, index: int, workdir: Path) -> dict[str, float]:
        names = [name for name in TARGETS if name in self._targets]
        shift = index % len(names)
        order = names[shift:] + names[:shift]
        sample: dict[str, float] = {}
        maximum = ghz.Load(
            seconds=self.seconds,
            max_calls=2_000_000,
            concurrency=self.concurrency,
            connections=self.connections,
            skip_first=500,
        )
        errors = dict.fromkeys(names, 0.0)
        for name in order:
            target = self._targets[name]
            cpu_before = _cpu_seconds(target.process)
            result = self._call(target, maximum)
            cpu = _cpu_seconds(target.process) - cpu_before
            sample[f"{name}_rps"] = result.rps
            sample[f"{name}_p50_100_ms"] = result.p50_ms
            sample[f"{name}_p99_100_ms"] = result.p99_ms
            errors[name] += result.errors
            if target.process is not None and result.ok:
                sample[f"{name}_cpu_us_per_call"] = cpu / result.ok * 1e6
        rate = max(1, round(sample["xds_rps"] * 0.25))
        sample["rate_25_rps"] = rate
        seconds = self.seconds / QUARTER_ROUNDS
        quarter = ghz.Load(
            seconds=seconds,
            max_calls=int(rate * seconds) + 1000,
            concurrency=self.concurrency,
            connections=self.connections,
            rps=rate,
            skip_first=100,
        )
        latencies: dict[str, list[float]] = {name: [] for name in names}
        for round_index in range(QUARTER_ROUNDS):
            shift = round_index % len(order)
            for name in order[shift:] + order[:shift]:
                result = self._call(self._targets[name], quarter)
                if result.ok and not result.latencies_ms:
                    raise RuntimeError("ghz reported no per-call latencies (no details)")
                latencies[name] += result.latencies_ms
                errors[name] += result.errors
        for measured, pooled in latencies.items():
            sample[f"{measured}_p50_25_ms"] = percentile(pooled, 50)
            sample[f"{measured}_p99_25_ms"] = percentile(pooled, 99)
        for name, count in errors.items():
            sample[f"{name}_errors"] = count
        _add_comparisons(sample, names)
        return sample

    def _call(self, target: _Target, load: ghz.Load) -> ghz.GhzResult:
        for child in self._children:
            child.check_alive()
        result = ghz.run(
            target=target.address,
            authority=target.authority,
            load=load,
            payload_bytes=self.payload_bytes,
            cpus=len(LOAD_CPU),
            call=self.call,
            data=self.data,
        )
        # Let connections close and the proxy settle before the next target.
        time.sleep(0.5)
        return result


@dataclass
class H2loadCase(UnaryCase):
    """The same targets and measurements under h2load instead of ghz, unary or streaming.

    h2load, written in C, costs less per call than ghz, so the proxies get
    closer to their own limit. Its percentiles come from its per-request
    log; the 25% load is `--rps` per connection, which h2load sends in
    bursts (measured per run: `*_together_25`), so the added-latency target
    is not judged on these cases.
    """

    _body: Path | None = None

    @property
    def label(self) -> str:
        return f"{super().label} (h2load)"

    @property
    def params(self) -> Mapping[str, Any]:
        return {**super().params, "load_generator": "h2load"}

    def prepare(self, workdir: Path) -> dict[str, Any]:
        notes = super().prepare(workdir)
        self._body = workdir / "request.grpc"
        self._body.write_bytes(
            h2load.streaming_request_frame(self.payload_bytes, self.stream_messages)
            if self.stream_messages
            else h2load.unary_request_frame(self.payload_bytes)
        )
        notes["load"] = "h2load (HTTP/2 POSTs of one gRPC frame; success = HTTP 2xx)"
        return notes

    def run_once(self, index: int, workdir: Path) -> dict[str, float]:
        names = [name for name in TARGETS if name in self._targets]
        shift = index % len(names)
        order = names[shift:] + names[:shift]
        sample: dict[str, float] = {}
        for name in order:
            target = self._targets[name]
            cpu_before = _cpu_seconds(target.process)
            result = self._load(target, workdir / f"{name}-100.log", rps_per_client=0.0)
            cpu = _cpu_seconds(target.process) - cpu_before
            sample[f"{name}_rps"] = result.rps
            sample[f"{name}_mean_100_ms"] = result.mean_ms
            sample[f"{name}_p50_100_ms"] = result.p50_ms
            sample[f"{name}_p99_100_ms"] = result.p99_ms
            sample[f"{name}_errors"] = result.failed
            if target.process is not None and result.ok:
                sample[f"{name}_cpu_us_per_call"] = cpu / result.ok * 1e6
        rate = max(1, round(sample["xds_rps"] * 0.25))
        sample["rate_25_rps"] = rate
        for name in order:
            result = self._load(
                self._targets[name],
                workdir / f"{name}-25.log",
                rps_per_client=rate / self.connections,
            )
            sample[f"{name}_p50_25_ms"] = result.p50_ms
            sample[f"{name}_p99_25_ms"] = result.p99_ms
            sample[f"{name}_together_25"] = result.started_together
            sample[f"{name}_errors"] += result.failed
        _add_comparisons(sample, names)
        return sample

    def _load(
        self, target: _Target, log_path: Path, *, rps_per_client: float
    ) -> h2load.H2loadResult:
        assert self._body is not None, "prepare() first"
        for child in self._children:
            child.check_alive()
        log_path.parent.mkdir(parents=True, exist_ok=True)
        result = h2load.run(
            address=target.address,
            authority=target.authority or HOST,
            path="/" + self.call.replace("TestService.", "TestService/"),
            body=self._body,
            seconds=self.seconds,
            clients=self.connections,
            streams_per_client=self.concurrency // self.connections,
            cpus=LOAD_CPU,
            rps_per_client=rps_per_client,
            log_path=log_path,
            # As the ghz cases skip their first calls: connections and
            # caches warm up.
            warmup_seconds=0.5,
        )
        # The log holds a line per request: gone once read.
        log_path.unlink(missing_ok=True)
        # Let connections close and the proxy settle before the next target.
        time.sleep(0.5)
        return result


def _add_comparisons(sample: dict[str, float], names: Sequence[str]) -> None:
    """Each proxy against the backend directly and xds-ingress against the others."""
    for name in names:
        if name == "direct":
            continue
        sample[f"{name}_vs_direct"] = sample[f"{name}_rps"] / sample["direct_rps"]
        for load in ("100", "25"):
            for pct in ("p50", "p99"):
                sample[f"{name}_added_{pct}_{load}_ms"] = (
                    sample[f"{name}_{pct}_{load}_ms"] - sample[f"direct_{pct}_{load}_ms"]
                )
    sample["xds_vs_static"] = sample["xds_rps"] / sample["static_rps"]
    if "nginx_rps" in sample:
        sample["xds_vs_nginx"] = sample["xds_rps"] / sample["nginx_rps"]


def _cpu_seconds(child: Child | None) -> float:
    """CPU time of a proxy and its children (nginx's worker), in seconds."""
    if child is None:
        return 0.0
    total = 0.0
    with contextlib.suppress(psutil.Error):
        process = psutil.Process(child.pid)
        for one in (process, *process.children(recursive=True)):
            times = one.cpu_times()
            total += times.user + times.system
    return total


def backend_objects(backend_port: int) -> str:
    """The one Service, its EndpointSlice (the backend) and an Ingress for HOST, as YAML."""
    name, namespace = "grpc-backend", "bench"
    documents = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "ports": [{"name": "grpc", "port": 50051, "appProtocol": "kubernetes.io/h2c"}]
            },
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-slice",
                "namespace": namespace,
                "labels": {"kubernetes.io/service-name": name},
            },
            "addressType": "IPv4",
            "ports": [{"name": "grpc", "port": backend_port}],
            "endpoints": [{"addresses": [LOOPBACK], "conditions": {"ready": True}}],
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "rules": [
                    {
                        "host": HOST,
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {
                                        "service": {"name": name, "port": {"name": "grpc"}}
                                    },
                                }
                            ]
                        },
                    }
                ]
            },
        },
    ]
    return yaml.safe_dump_all(documents, sort_keys=False)


class DataPlane:
    name = NAME
    title = "Data plane: gRPC through xds-ingress's Envoy, tuned Envoy, nginx, direct"

    @property
    def metrics(self) -> Mapping[str, MetricSpec]:
        return METRICS

    def cases(self, *, quick: bool) -> Sequence[UnaryCase]:
        seconds = 3 if quick else 8
        return [
            UnaryCase(payload_bytes=128, seconds=seconds),
            UnaryCase(payload_bytes=128, seconds=seconds, stream_messages=STREAM_MESSAGES),
            *(
                [
                    H2loadCase(payload_bytes=128, seconds=seconds),
                    H2loadCase(payload_bytes=128, seconds=seconds, stream_messages=STREAM_MESSAGES),
                ]
                if shutil.which("h2load") is not None
                else []
            ),
            *(
                [UnaryCase(payload_bytes=128, seconds=seconds, backend=NGINX_H2C)]
                if shutil.which("nginx") is not None
                else []
            ),
        ]

    def available(self) -> str | None:
        missing = [tool for tool in ("ghz", "grpc-interop-server") if repo_tool(tool) is None]
        if missing:
            return f"{', '.join(missing)} not built: run bench/install-deps.sh"
        if len(os.sched_getaffinity(0)) < 2:
            return "needs 2 CPUs (one for the load, one for the servers)"
        return None

    def targets(self, cases: Sequence[CaseResult]) -> list[TargetResult]:
        # The unary case first, as before; the streaming case's after it.
        targets: list[TargetResult] = []
        for index, case in enumerate(cases or [None]):
            suffix = "" if index == 0 or case is None else f" ({case.label})"
            targets += _targets(case, suffix)
        return targets


def _targets(case: CaseResult | None, suffix: str) -> list[TargetResult]:
    def median(name: str) -> float | None:
        return None if case is None else case.median(name)

    added_p99 = at_most(
        name=f"added p99 at 25% load{suffix}",
        description=f"added p99 ≤ 1 ms over direct at 25% load{suffix}",
        value=median("xds_added_p99_25_ms"),
        threshold=1.0,
        unit="ms",
    )
    if case is not None and case.params.get("load_generator") == "h2load":
        together = median("xds_together_25")
        added_p99 = not_judged(
            added_p99,
            why=(
                "h2load's --rps releases its calls in bursts"
                + ("" if together is None else f" ({together:.1f} started together per call)")
                + ", not as a steady 25% load; the ghz cases pace calls one at a time"
            ),
        )

    return [
        at_least(
            name=f"throughput vs hand-tuned Envoy{suffix}",
            description=f"data-plane throughput ≥ 0.95x the hand-tuned static Envoy{suffix}",
            value=median("xds_vs_static"),
            threshold=0.95,
            unit="x",
        ),
        at_least(
            name=f"throughput vs nginx{suffix}",
            description=f"data-plane throughput ≥ 2.5x nginx grpc_pass{suffix}",
            value=median("xds_vs_nginx"),
            threshold=2.5,
            unit="x",
            note=""
            if median("xds_vs_nginx") is not None
            else "not measured (nginx missing, or a failure)",
        ),
        added_p99,
    ]
