"""`xds-ingress serve` as a child process, seen only from outside.

Running the control plane as its own process makes its peak memory and CPU
time measurable apart from the benchmark's, and measures what a user runs.
The benchmark learns its state the way an operator would: the admin API
(which Envoy ACKed what), the Prometheus metrics (build time) and its log.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import grpc

from bench.procs import LOOPBACK, Child, free_port, venv_tool
from xds_ingress.admin.v1 import admin_pb2, admin_pb2_grpc


@dataclass(frozen=True, slots=True)
class Ports:
    xds: int
    admin: int
    metrics: int
    http: int
    https: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(
            xds=free_port(),
            admin=free_port(),
            metrics=free_port(),
            http=free_port(),
            https=free_port(),
        )


def start(
    *,
    source: Path | str,
    ports: Ports,
    workdir: Path,
    cpus: tuple[int, ...] = (),
    extra_args: Sequence[str] = (),
) -> Child:
    """`source`: a folder, or "kubernetes" (then `extra_args` names --kubeconfig)."""
    return Child.spawn(
        "control plane",
        [
            venv_tool("xds-ingress"),
            "serve",
            "--source",
            source,
            "--xds-address",
            f"{LOOPBACK}:{ports.xds}",
            "--admin-address",
            f"{LOOPBACK}:{ports.admin}",
            "--metrics-address",
            f"{LOOPBACK}:{ports.metrics}",
            "--listen-address",
            LOOPBACK,
            "--http-port",
            str(ports.http),
            "--https-port",
            str(ports.https),
            "--log-level",
            "info",
            # Benchmarks measure xDS itself on loopback; the mTLS handshake is
            # once per connection and not what they compare.
            "--insecure",
            *extra_args,
        ],
        log_path=workdir / "control-plane.log",
        cpus=cpus,
    )


def acked_counts(admin_port: int, *, node_id: str | None = None) -> dict[str, tuple[int, int]]:
    """type URL → (resources sent, resources ACKed), summed over connected nodes.

    `node_id`: count only that Envoy's streams.
    """
    with grpc.insecure_channel(f"{LOOPBACK}:{admin_port}") as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        reply: admin_pb2.ListNodesResponse = stub.ListNodes(
            admin_pb2.ListNodesRequest(), timeout=5.0
        )
    totals: dict[str, tuple[int, int]] = {}
    for node in reply.nodes:
        if node_id is not None and node.node_id != node_id:
            continue
        for status in node.types:
            sent, acked = totals.get(status.type_url, (0, 0))
            totals[status.type_url] = (sent + status.resources_sent, acked + status.resources_acked)
    return totals


def wait_all_acked(
    control_plane: Child,
    admin_port: int,
    expected: Mapping[str, int],
    *,
    within_seconds: float,
    node_id: str | None = None,
) -> float:
    """Seconds from the control plane's spawn until every expected resource is ACKed.

    `expected`: type URL → resource count (types with none are skipped).
    """
    deadline = time.perf_counter() + within_seconds
    while True:
        now = time.perf_counter()
        found = acked_counts(admin_port, node_id=node_id)
        if all(
            found.get(type_url, (0, 0))[1] >= count for type_url, count in expected.items() if count
        ):
            return now - control_plane.started
        control_plane.check_alive()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"not every resource ACKed: {found}, expected {dict(expected)}")
        time.sleep(0.02)


def build_seconds(metrics_port: int) -> tuple[float, int]:
    """(seconds spent in snapshot builds, number of builds) from /metrics.

    The histogram cannot tell the first build from a later no-op rebuild;
    `log_timeline` can, and is preferred when the log line is there.
    """
    with urllib.request.urlopen(f"http://{LOOPBACK}:{metrics_port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    total = re.search(r"^xds_ingress_snapshot_build_seconds_sum ([\d.e+-]+)$", text, re.M)
    count = re.search(r"^xds_ingress_snapshot_build_seconds_count ([\d.e+-]+)$", text, re.M)
    if total is None or count is None:
        raise ValueError("no xds_ingress_snapshot_build_seconds in /metrics")
    return float(total.group(1)), int(float(count.group(1)))


# "2026-11-23 10:40:39,058 INFO xds_ingress.sources.file: read 30000 objects from …"
_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) \w+ [\w.]+: (.*)$")


def log_timeline(control_plane: Child) -> dict[str, float]:
    """Seconds from spawn to milestones in the log (those found; ms resolution).

    `sources_synced`: the folder was read; `first_published`: the first
    snapshot was published, and `first_build` (a duration, not a moment) how
    long the pipeline says it took to translate, build and serialise it.
    Best effort: the wording is the product's.
    """
    milestones: dict[str, float] = {}
    try:
        text = control_plane.log_path.read_text(errors="replace")
    except OSError:
        return milestones
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
        at = stamp + int(match.group(2)) / 1000 - control_plane.started_wall
        message = match.group(3)
        if message.startswith("read ") and "objects from" in message:
            milestones.setdefault("sources_synced", at)
        elif message.startswith("published snapshot") and "first_published" not in milestones:
            milestones["first_published"] = at
            took = re.search(r" in ([\d.]+) ms$", message)
            if took is not None:
                milestones["first_build"] = float(took.group(1)) / 1000
    return milestones
