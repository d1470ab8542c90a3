"""A real Envoy for benchmarks: start it from a bootstrap, wait until it is LIVE.

"LIVE" is the admin `/ready` answer once Envoy's init manager is done
(every initial cluster and listener warmed). After that the admin `/stats`
counts must match what Envoy was meant to load: asking for stats earlier
would make Envoy's main thread, which also applies xDS, walk every stat of
every cluster on each poll and slow the very thing measured.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import LOOPBACK, Child
from xds_ingress.envoy_launcher import envoy_binary

_COUNTS_FILTER = (
    r"^(cluster_manager\.(active_clusters|warming_clusters)"
    r"|listener_manager\.(total_listeners_active|total_listeners_warming))$"
)


@dataclass(frozen=True, slots=True)
class Expected:
    """What a LIVE Envoy must show: active clusters and active listeners."""

    clusters: int
    listeners: int


def write_bootstrap(bootstrap: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bootstrap))
    return path


def start(
    *,
    name: str,
    config: Path,
    workdir: Path,
    concurrency: int = 1,
    cpus: tuple[int, ...] = (),
) -> Child:
    """Envoy from the bootstrap file `config` (JSON or YAML), logging into `workdir`."""
    return Child.spawn(
        name,
        [
            envoy_binary(),
            "-c",
            config,
            "--concurrency",
            str(concurrency),
            "--log-level",
            "warning",
            # Several Envoys on one machine must not share hot-restart memory.
            "--use-dynamic-base-id",
        ],
        log_path=workdir / "envoy.log",
        cpus=cpus,
    )


def admin_get(admin_port: int, path: str, *, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{admin_port}{path}", timeout=timeout) as reply:
        body: bytes = reply.read()
        return body.decode()


def counts(admin_port: int) -> dict[str, int]:
    # usedonly skips the never-written stats of every cluster: 4x faster at
    # 10k clusters. A gauge never set (warming 0) may be missing: read as 0.
    # Right after LIVE a big Envoy's main thread can be busy for seconds, so
    # the timeout is long.
    query = urllib.parse.quote(_COUNTS_FILTER)
    text = admin_get(admin_port, f"/stats?usedonly&filter={query}", timeout=60.0)
    found: dict[str, int] = {}
    for line in text.splitlines():
        match = re.fullmatch(r"([\w.]+): (\d+)", line.strip())
        if match:
            found[match.group(1)] = int(match.group(2))
    return found


def _is_live(admin_port: int) -> bool:
    try:
        return admin_get(admin_port, "/ready", timeout=1.0).strip() == "LIVE"
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def wait_live(envoy: Child, admin_port: int, expected: Expected, *, within_seconds: float) -> float:
    """Seconds from `envoy`'s spawn until it is LIVE with the expected counts."""
    deadline = time.perf_counter() + within_seconds
    while not _is_live(admin_port):
        envoy.check_alive()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{envoy.name} not LIVE after {within_seconds} s")
        time.sleep(0.01)
    while True:
        found = counts(admin_port)
        if (
            found.get("cluster_manager.active_clusters") == expected.clusters
            and found.get("cluster_manager.warming_clusters", 0) == 0
            and found.get("listener_manager.total_listeners_active") == expected.listeners
            and found.get("listener_manager.total_listeners_warming", 0) == 0
        ):
            # When the counts were answered, not asked for: they describe
            # Envoy as it is when its main thread gets to the request. Both
            # sides of a comparison pay the same stats walk.
            return time.perf_counter() - envoy.started
        envoy.check_alive()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{envoy.name} LIVE but counts {found} are not {expected}")
        time.sleep(0.05)


def counter_sums(admin_port: int, suffixes: tuple[str, ...]) -> dict[str, int]:
    """Each suffix (e.g. ".no_cluster") → the sum of every counter whose name ends so."""
    pattern = "(" + "|".join(re.escape(suffix) for suffix in suffixes) + ")$"
    text = admin_get(admin_port, f"/stats?usedonly&filter={urllib.parse.quote(pattern)}")
    sums = dict.fromkeys(suffixes, 0)
    for line in text.splitlines():
        name, _, value = line.strip().partition(": ")
        for suffix in suffixes:
            if name.endswith(suffix) and value.isdigit():
                sums[suffix] += int(value)
    return sums
