"""Cold start: N Services from the source to a LIVE Envoy with every resource ACKed.

Subject: `xds-ingress serve` (a child process) reading a folder of YAML,
and a real Envoy on delta ADS started as soon as the xDS port accepts. The
clock runs from spawning the control plane until Envoy is LIVE with every
cluster and listener active and the control plane's admin API shows every
resource of every type ACKed.

Yardstick: the same Envoy binary loading the same listeners, routes,
clusters and endpoints (built by the same code, `render_static_bootstrap`)
from a static bootstrap file; the clock runs from spawning Envoy until it is
LIVE with the same counts.

Both use `--concurrency 1`. Within a run the two go in alternating order so
drift in the machine's load favours neither.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import psutil

from bench import control_plane, envoy, workload
from bench.procs import LOOPBACK, Child, free_port, wait_until_accepting
from bench.results import CaseResult, MetricSpec, TargetResult, at_most
from xds_ingress.bootstrap import render_bootstrap

NAME: Final = "cold-start"
SIZES: Final = (1000, 5000, 10000)
QUICK_SIZES: Final = (100, 1000)
ENDPOINTS_PER_SERVICE: Final = 10
TARGET_SERVICES: Final = 10000
TARGET_RATIO: Final = 1.25
ENVOY_CONCURRENCY: Final = 1
MIB: Final = 1024 * 1024

METRICS: Final[Mapping[str, MetricSpec]] = {
    "ratio": MetricSpec("x", "xDS cold start / static-file cold start (paired per run)"),
    "xds_live_s": MetricSpec("s", "control plane spawned → Envoy LIVE, all ACKed"),
    "static_live_s": MetricSpec("s", "Envoy spawned with the static file → LIVE"),
    "restart_ratio": MetricSpec("x", "a new Envoy against the warm control plane / static"),
    "envoy_restart_s": MetricSpec("s", "new Envoy, control plane already up → LIVE, all ACKed"),
    "cp_listening_s": MetricSpec("s", "control plane spawned → xDS port accepting"),
    "cp_synced_s": MetricSpec("s", "control plane spawned → folder read (its log)"),
    "cp_published_s": MetricSpec("s", "control plane spawned → first snapshot published"),
    "envoy_xds_live_s": MetricSpec("s", "xDS Envoy spawned → LIVE with the counts"),
    "acked_s": MetricSpec("s", "control plane spawned → every resource ACKed"),
    "cp_build_s": MetricSpec("s", "first snapshot's translate + build + serialise (its log)"),
    "cp_builds": MetricSpec("builds", "snapshot builds by the time all was ACKed"),
    "cp_peak_rss_mib": MetricSpec("MiB", "control plane peak RSS (VmHWM)"),
    "cp_cpu_s": MetricSpec(
        "s", "control plane CPU time until all ACKed (with its YAML-parsing worker processes)"
    ),
    "envoy_xds_peak_rss_mib": MetricSpec("MiB", "xDS Envoy peak RSS"),
    "envoy_static_peak_rss_mib": MetricSpec("MiB", "static-file Envoy peak RSS"),
}


@dataclass
class ColdStartCase:
    services: int
    endpoints: int = ENDPOINTS_PER_SERVICE
    # Set by prepare().
    _folder: Path | None = None
    _static_config: Path | None = None
    _static_admin_port: int = 0
    _counts: dict[str, int] = field(default_factory=dict)
    _type_counts: dict[str, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.services} Services"

    @property
    def params(self) -> Mapping[str, Any]:
        return {"services": self.services, "endpoints_per_service": self.endpoints}

    def _timeout(self) -> float:
        # Generous: a slow run must be measured, not cut short; still bounded.
        return 60.0 + self.services * 0.06

    def prepare(self, workdir: Path) -> dict[str, Any]:
        self._folder = workload.write_folder(
            workdir / "objects", services=self.services, endpoints=self.endpoints
        )
        self._static_admin_port = free_port()
        self._static_config = workdir / "static-bootstrap.json"
        phases_out = workdir / "phases.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.phases",
                str(self._folder),
                str(phases_out),
                "--repeats",
                "5",
                "--http-port",
                str(free_port()),
                "--https-port",
                str(free_port()),
                "--static-bootstrap",
                str(self._static_config),
                "--static-admin-port",
                str(self._static_admin_port),
            ],
            check=True,
            timeout=self._timeout(),
        )
        phases: dict[str, Any] = json.loads(phases_out.read_text())
        self._counts = phases["counts"]
        self._type_counts = phases["type_counts"]
        timings: dict[str, list[float]] = phases["timings"]
        return {
            "objects": phases["objects"],
            "resources": self._counts,
            "virtual_hosts": phases["virtual_hosts"],
            "static_bootstrap_mib": phases.get("static_bootstrap_bytes", 0) / MIB,
            "yaml_mib": sum(p.stat().st_size for p in self._folder.iterdir()) / MIB,
            # In-process stage timings (bench/phases.py): the folder read once,
            # then 5 cold builds; medians in seconds.
            "stages_s": {
                "read_folder": phases["read_seconds"],
                "store": phases["store_seconds"],
                **{stage: statistics.median(values) for stage, values in timings.items()},
            },
            "stages_peak_rss_mib": phases["peak_rss_bytes"] / MIB,
        }

    def close(self) -> None:
        """Nothing outlives a run."""

    def run_once(self, index: int, workdir: Path) -> dict[str, float]:
        sample: dict[str, float] = {}
        steps = (self._run_static, self._run_xds)
        for step in steps if index % 2 == 0 else reversed(steps):
            sample.update(step(workdir))
        sample["ratio"] = sample["xds_live_s"] / sample["static_live_s"]
        sample["restart_ratio"] = sample["envoy_restart_s"] / sample["static_live_s"]
        return sample

    def _run_static(self, workdir: Path) -> dict[str, float]:
        assert self._static_config is not None, "prepare() first"
        expected = envoy.Expected(
            clusters=self._counts["clusters"], listeners=self._counts["listeners"]
        )
        proxy = envoy.start(
            name="static Envoy",
            config=self._static_config,
            workdir=workdir / "static-envoy",
            concurrency=ENVOY_CONCURRENCY,
        )
        try:
            live = envoy.wait_live(
                proxy, self._static_admin_port, expected, within_seconds=self._timeout()
            )
            rss = proxy.peak_rss_bytes()
        finally:
            proxy.stop()
        return {"static_live_s": live, "envoy_static_peak_rss_mib": rss / MIB}

    def _run_xds(self, workdir: Path) -> dict[str, float]:
        assert self._folder is not None, "prepare() first"
        ports = control_plane.Ports.pick()
        envoy_admin = free_port()
        config = envoy.write_bootstrap(
            render_bootstrap(
                xds_address=f"{LOOPBACK}:{ports.xds}",
                node_id="bench-xds",
                node_cluster="bench",
                admin_address=f"{LOOPBACK}:{envoy_admin}",
                delta=True,
            ),
            workdir / "xds-envoy" / "bootstrap.json",
        )
        expected = envoy.Expected(
            # The bootstrap's own xds_cluster is active too.
            clusters=self._counts["clusters"] + 1,
            listeners=self._counts["listeners"],
        )
        timeout = self._timeout()
        server = control_plane.start(source=self._folder, ports=ports, workdir=workdir / "cp")
        proxy = None
        try:
            listening = wait_until_accepting(server, ports.xds, within_seconds=timeout)
            proxy = envoy.start(
                name="xDS Envoy",
                config=config,
                workdir=workdir / "xds-envoy",
                concurrency=ENVOY_CONCURRENCY,
            )
            envoy_live = envoy.wait_live(proxy, envoy_admin, expected, within_seconds=timeout)
            acked = control_plane.wait_all_acked(
                server, ports.admin, self._type_counts, within_seconds=timeout, node_id="bench-xds"
            )
            cpu = _cpu_seconds_with_workers(server)
            live_from_cp = proxy.started - server.started + envoy_live
            build, builds = control_plane.build_seconds(ports.metrics)
            timeline = control_plane.log_timeline(server)
            sample = {
                "xds_live_s": max(live_from_cp, acked),
                "cp_listening_s": listening,
                "envoy_xds_live_s": envoy_live,
                "acked_s": acked,
                "cp_build_s": build / max(builds, 1),
                "cp_cpu_s": cpu,
                "cp_peak_rss_mib": server.peak_rss_bytes() / MIB,
                "envoy_xds_peak_rss_mib": proxy.peak_rss_bytes() / MIB,
            }
            if "sources_synced" in timeline:
                sample["cp_synced_s"] = timeline["sources_synced"]
            if "first_published" in timeline:
                sample["cp_published_s"] = timeline["first_published"]
            if "first_build" in timeline:
                sample["cp_build_s"] = timeline["first_build"]
            sample["cp_builds"] = builds
            proxy.stop()
            sample["envoy_restart_s"] = self._second_envoy(server, ports, workdir, timeout)
            return sample
        finally:
            if proxy is not None:
                proxy.stop()
            server.stop()

    def _second_envoy(
        self, server: Child, ports: control_plane.Ports, workdir: Path, timeout: float
    ) -> float:
        """A new Envoy against the now warm control plane: spawn → LIVE, all ACKed.

        What an Envoy pod restarting or scaling out costs; the control plane's
        own start and build are behind it.
        """
        admin = free_port()
        config = envoy.write_bootstrap(
            render_bootstrap(
                xds_address=f"{LOOPBACK}:{ports.xds}",
                node_id="bench-xds-restarted",
                node_cluster="bench",
                admin_address=f"{LOOPBACK}:{admin}",
            ),
            workdir / "xds-envoy-2" / "bootstrap.json",
        )
        expected = envoy.Expected(
            clusters=self._counts["clusters"] + 1, listeners=self._counts["listeners"]
        )
        proxy = envoy.start(
            name="second xDS Envoy",
            config=config,
            workdir=workdir / "xds-envoy-2",
            concurrency=ENVOY_CONCURRENCY,
        )
        try:
            live = envoy.wait_live(proxy, admin, expected, within_seconds=timeout)
            acked = control_plane.wait_all_acked(
                server,
                ports.admin,
                self._type_counts,
                within_seconds=timeout,
                node_id="bench-xds-restarted",
            )
        finally:
            proxy.stop()
        return max(live, acked - (proxy.started - server.started))


def _cpu_seconds_with_workers(server: Child) -> float:
    """The control plane's CPU time, with the worker processes it read the folder on.

    The file source parses a large folder on worker processes, which have
    exited (and been waited for) by the time the folder is read: their time
    is the control plane's children's.
    """
    try:
        times = psutil.Process(server.pid).cpu_times()
    except psutil.Error:
        return server.cpu_seconds()
    return float(times.user + times.system + times.children_user + times.children_system)


class ColdStart:
    name = NAME
    title = "Cold start: Services from the source to a LIVE Envoy, every resource ACKed"

    @property
    def metrics(self) -> Mapping[str, MetricSpec]:
        return METRICS

    def cases(self, *, quick: bool) -> Sequence[ColdStartCase]:
        return [ColdStartCase(services=n) for n in (QUICK_SIZES if quick else SIZES)]

    def available(self) -> str | None:
        return None

    def targets(self, cases: Sequence[CaseResult]) -> list[TargetResult]:
        at_target = [c for c in cases if c.params.get("services") == TARGET_SERVICES]
        value = at_target[0].median("ratio") if at_target else None
        note = "" if at_target else f"{TARGET_SERVICES} Services not run (--quick or a failure)"
        return [
            at_most(
                name="cold-start ratio at 10k Services",
                description=(
                    f"cold start ≤ {TARGET_RATIO}x the static-file yardstick "
                    f"at {TARGET_SERVICES} Services"
                ),
                value=value,
                threshold=TARGET_RATIO,
                unit="x",
                note=note,
            )
        ]
