"""Coalescing: thousands of client connections, the upstream connections a proxy opens.

C client connections (1000 and 5000; `--quick`: 200), each with 10 calls in
flight (ghz `--connections C -c 10C`, unary 128 B, unthrottled, bounded in
calls and time), through the Envoy xds-ingress configured (`--concurrency
1`: one worker) and through nginx `grpc_pass` (one worker, upstream
keepalive; Debian's nginx-light, skipped when missing), to one grpc-go
interop server.

While the load runs, the upstream connections are sampled every 0.2 s:
Envoy's own `upstream_cx_active` gauge for the backend's cluster, and for
nginx the established TCP connections to the backend's port (`ss`, less
Envoy's idle ones at that moment). The clients actually connected to the
proxy are sampled the same way, to show the load had the shape asked for.

Yardstick: the HTTP/2 minimum, ceil(calls in flight / the backend's
SETTINGS_MAX_CONCURRENT_STREAMS, read off a real connection to it, or
Envoy's own per-connection stream cap when the backend sets none) per
endpoint per Envoy worker. Target (issue 7): Envoy at that minimum at 1000
and 5000 clients. nginx is reported beside it (issue 7 measured about one
upstream connection per call in flight).

File descriptors: every child inherits this process's soft RLIMIT_NOFILE,
raised to the hard limit first; a case that cannot fit in the hard limit
fails with that reason rather than measuring refused connections.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bench import envoy, folder_stack, ghz, h2_settings, peer_configs
from bench.data_plane import HOST, backend_objects
from bench.procs import (
    LOOPBACK,
    Child,
    free_port,
    repo_tool,
    spawn_interop_server,
    wait_until_accepting,
)
from bench.results import CaseResult, MetricSpec, TargetResult, at_most

NAME: Final = "coalescing"
SIZES: Final = (1000, 5000)
QUICK_SIZES: Final = (200,)
CALLS_PER_CLIENT: Final = 10
PAYLOAD_BYTES: Final = 128
SAMPLE_SECONDS: Final = 0.2
ENVOY_WORKERS: Final = 1
BACKEND_ENDPOINTS: Final = 1
# Envoy's default cap on streams per upstream HTTP/2 connection (2^31 - 1),
# used when its config dump names none.
ENVOY_DEFAULT_MAX_STREAMS: Final = 2**31 - 1
# Descriptors beyond the client connections: upstream, admin, logs, slack.
FD_SLACK: Final = 1000
# Failed calls' texts kept per proxy and case, and how much of each.
MAX_FAILURE_KINDS: Final = 10
FAILURE_TEXT_CHARS: Final = 300

METRICS: Final[Mapping[str, MetricSpec]] = {
    "h2_minimum": MetricSpec("conns", "HTTP/2 minimum upstream connections (the yardstick)"),
    "envoy_upstream_peak": MetricSpec("conns", "Envoy: upstream connections, peak sample"),
    "envoy_upstream_median": MetricSpec("conns", "Envoy: upstream connections, median sample"),
    "envoy_vs_minimum": MetricSpec("x", "Envoy's peak / the HTTP/2 minimum"),
    "nginx_upstream_peak": MetricSpec("conns", "nginx: upstream connections, peak sample"),
    "nginx_upstream_median": MetricSpec("conns", "nginx: upstream connections, median sample"),
    "nginx_vs_envoy": MetricSpec("x", "nginx's peak / Envoy's peak"),
    "envoy_clients_peak": MetricSpec("conns", "Envoy: client connections, peak sample"),
    "nginx_clients_peak": MetricSpec("conns", "nginx: client connections, peak sample"),
    "envoy_rps": MetricSpec("calls/s", "Envoy: OK calls per second"),
    "nginx_rps": MetricSpec("calls/s", "nginx: OK calls per second"),
    "envoy_errors": MetricSpec("calls", "Envoy: failed calls (not cut at stop)"),
    "nginx_errors": MetricSpec("calls", "nginx: failed calls (not cut at stop)"),
}


def raise_fd_limit(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE (children inherit it); returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    if soft < needed:
        raise RuntimeError(
            f"needs {needed} file descriptors per process, the hard limit is {hard}: "
            "raise it (ulimit -Hn, or LimitNOFILE) and run again"
        )
    return soft


def established_to(port: int) -> int:
    """Established TCP connections on loopback whose remote end is `port` (netlink, `ss`)."""
    completed = subprocess.run(
        ["ss", "-tnH", "state", "established", "dst", f"{LOOPBACK}:{port}"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return sum(1 for line in completed.stdout.splitlines() if line.strip())


class Sampler:
    """Calls `sample()` every SAMPLE_SECONDS on a thread until stopped; keeps the values."""

    def __init__(self, sample: Callable[[], dict[str, float]]) -> None:
        self._sample = sample
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="coalescing-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            try:
                self.samples.append(self._sample())
            except (OSError, subprocess.SubprocessError, ValueError):
                continue  # a missed sample; the others stand

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def peak(self, name: str) -> float:
        return max((s[name] for s in self.samples if name in s), default=float("nan"))

    def median(self, name: str) -> float:
        values = [s[name] for s in self.samples if name in s]
        return statistics.median(values) if values else float("nan")


@dataclass
class CoalescingCase:
    clients: int
    seconds: float
    _children: list[Child] = field(default_factory=list)
    _backend_port: int = 0
    _envoy_listen: int = 0
    _envoy_admin: int = 0
    _nginx_listen: int = 0
    _minimum: int = 0
    # What the failed calls said, per proxy: the counts alone do not tell a
    # proxy's refusal from the load generator running out of something.
    _failures: dict[str, set[str]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.clients} clients"

    @property
    def failures(self) -> dict[str, list[str]]:
        return {proxy: sorted(kinds) for proxy, kinds in self._failures.items() if kinds}

    def note_failures(self, proxy: str, result: ghz.GhzResult) -> None:
        kinds = self._failures.setdefault(proxy, set())
        for kind in result.error_kinds:
            if len(kinds) < MAX_FAILURE_KINDS:
                kinds.add(kind[:FAILURE_TEXT_CHARS])

    @property
    def params(self) -> Mapping[str, Any]:
        return {
            "clients": self.clients,
            "calls_in_flight_per_client": CALLS_PER_CLIENT,
            "calls_in_flight": self.clients * CALLS_PER_CLIENT,
            "seconds_per_load": self.seconds,
            "envoy_workers": ENVOY_WORKERS,
            "backend_endpoints": BACKEND_ENDPOINTS,
            "nginx_workers": 1,
            "call": ghz.UNARY_CALL,
            "payload_bytes": PAYLOAD_BYTES,
        }

    def _spawn(self, child: Child) -> Child:
        self._children.append(child)
        return child

    def prepare(self, workdir: Path) -> dict[str, Any]:
        limit = raise_fd_limit(self.clients * 2 + FD_SLACK)
        backend, self._backend_port = spawn_interop_server(workdir / "backend.log")
        self._spawn(backend)
        wait_until_accepting(backend, self._backend_port, within_seconds=30)
        backend_streams = h2_settings.max_concurrent_streams(self._backend_port)
        self._start_xds(workdir / "xds")
        envoy_streams = self._envoy_stream_cap()
        per_connection = min(
            envoy_streams, backend_streams if backend_streams is not None else envoy_streams
        )
        in_flight = self.clients * CALLS_PER_CLIENT
        self._minimum = math.ceil(in_flight / per_connection) * BACKEND_ENDPOINTS * ENVOY_WORKERS
        notes: dict[str, Any] = {
            "fd_soft_limit": limit,
            "backend_max_concurrent_streams": (
                "not set (unlimited)" if backend_streams is None else backend_streams
            ),
            "envoy_max_concurrent_streams_per_upstream": envoy_streams,
        }
        if shutil.which("nginx") is not None:
            self._start_nginx(workdir / "nginx")
        else:
            notes["nginx"] = "not installed (apt-get install nginx-light); skipped"
        return notes

    def _start_xds(self, workdir: Path) -> None:
        stack = folder_stack.start(
            workdir,
            objects_yaml=backend_objects(self._backend_port),
            node_id="bench-coalescing",
            expected=envoy.Expected(clusters=2, listeners=1),
            register=self._spawn,
            envoy_concurrency=ENVOY_WORKERS,
        )
        self._envoy_admin = stack.envoy_admin
        self._envoy_listen = stack.ports.http

    def _envoy_stream_cap(self) -> int:
        """max_concurrent_streams of the backend's cluster in Envoy's config dump, if set."""
        dump = json.loads(
            envoy.admin_get(self._envoy_admin, "/config_dump?resource=dynamic_active_clusters")
        )
        found: list[int] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "max_concurrent_streams":
                        found.append(int(value))
                    else:
                        walk(value)
            elif isinstance(node, list):
                for item in node:
                    walk(item)

        walk(dump)
        return min(found) if found else ENVOY_DEFAULT_MAX_STREAMS

    def _start_nginx(self, workdir: Path) -> None:
        self._nginx_listen = free_port()
        config = peer_configs.nginx_grpc(
            workdir=workdir,
            listen_port=self._nginx_listen,
            backend_port=self._backend_port,
            worker_connections=resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 100,
        )
        nginx = self._spawn(
            Child.spawn(
                "nginx",
                ["nginx", "-c", config, "-p", workdir, "-e", workdir / "error.log"],
                log_path=workdir / "nginx.log",
            )
        )
        wait_until_accepting(nginx, self._nginx_listen, within_seconds=30)

    def close(self) -> None:
        for child in reversed(self._children):
            child.stop()
        self._children.clear()

    def _envoy_upstream(self) -> int:
        # The backend's cluster only: the bootstrap's xds_cluster is not traffic.
        text = envoy.admin_get(self._envoy_admin, "/stats?filter=upstream_cx_active$")
        total = 0
        for line in text.splitlines():
            name, _, value = line.strip().partition(": ")
            if name.startswith("cluster.") and "xds_cluster" not in name and value.isdigit():
                total += int(value)
        return total

    def _load(self, listen: int, authority: str | None) -> ghz.GhzResult:
        for child in self._children:
            child.check_alive()
        in_flight = self.clients * CALLS_PER_CLIENT
        return ghz.run(
            target=f"{LOOPBACK}:{listen}",
            authority=authority,
            load=ghz.Load(
                seconds=self.seconds,
                max_calls=2_000_000,
                concurrency=in_flight,
                connections=self.clients,
            ),
            payload_bytes=PAYLOAD_BYTES,
            cpus=2,
        )

    def run_once(self, index: int, workdir: Path) -> dict[str, float]:
        sample: dict[str, float] = {"h2_minimum": self._minimum}

        def envoy_sample() -> dict[str, float]:
            return {
                "upstream": self._envoy_upstream(),
                "clients": established_to(self._envoy_listen),
            }

        with Sampler(envoy_sample) as sampled:
            result = self._load(self._envoy_listen, HOST)
        sample["envoy_upstream_peak"] = sampled.peak("upstream")
        sample["envoy_upstream_median"] = sampled.median("upstream")
        sample["envoy_clients_peak"] = sampled.peak("clients")
        sample["envoy_rps"] = result.rps
        sample["envoy_errors"] = result.errors
        self.note_failures("envoy", result)
        sample["envoy_vs_minimum"] = sample["envoy_upstream_peak"] / self._minimum
        time.sleep(1.0)  # let client connections close before the next load
        if self._nginx_listen:

            def nginx_sample() -> dict[str, float]:
                # Envoy keeps its (idle) upstream connections open meanwhile.
                total = established_to(self._backend_port)
                return {
                    "upstream": total - self._envoy_upstream(),
                    "clients": established_to(self._nginx_listen),
                }

            with Sampler(nginx_sample) as sampled:
                result = self._load(self._nginx_listen, None)
            sample["nginx_upstream_peak"] = sampled.peak("upstream")
            sample["nginx_upstream_median"] = sampled.median("upstream")
            sample["nginx_clients_peak"] = sampled.peak("clients")
            sample["nginx_rps"] = result.rps
            sample["nginx_errors"] = result.errors
            self.note_failures("nginx", result)
            sample["nginx_vs_envoy"] = sample["nginx_upstream_peak"] / max(
                sample["envoy_upstream_peak"], 1
            )
            time.sleep(1.0)
        return sample


class Coalescing:
    name = NAME
    title = "Coalescing: client connections in, upstream connections out (Envoy, nginx)"

    def __init__(self) -> None:
        self._cases: list[CoalescingCase] = []

    @property
    def metrics(self) -> Mapping[str, MetricSpec]:
        return METRICS

    def cases(self, *, quick: bool) -> Sequence[CoalescingCase]:
        if quick:
            self._cases = [CoalescingCase(clients=n, seconds=3) for n in QUICK_SIZES]
        else:
            self._cases = [CoalescingCase(clients=n, seconds=10) for n in SIZES]
        return self._cases

    def available(self) -> str | None:
        missing = [tool for tool in ("ghz", "grpc-interop-server") if repo_tool(tool) is None]
        if missing:
            return f"{', '.join(missing)} not built: run bench/install-deps.sh"
        if shutil.which("ss") is None:
            return "needs ss (iproute2) to count connections"
        return None

    def targets(self, cases: Sequence[CaseResult]) -> list[TargetResult]:
        for made, result in zip(self._cases, cases, strict=False):
            if made.failures:
                result.notes["failed_calls_said"] = made.failures
        results: list[TargetResult] = []
        for clients in SIZES:
            case = next((c for c in cases if c.params.get("clients") == clients), None)
            peak = case.metrics.get("envoy_upstream_peak") if case else None
            minimum = case.median("h2_minimum") if case else None
            results.append(
                at_most(
                    name=f"coalescing at {clients} clients",
                    description=(
                        f"Envoy's upstream connections at the HTTP/2 minimum at {clients} "
                        "clients x 10 calls (worst run's peak / minimum)"
                    ),
                    value=None if peak is None or not minimum else peak.max / minimum,
                    threshold=1.0,
                    unit="x",
                    note="" if case else f"{clients} clients not run (--quick or a failure)",
                )
            )
        return results
