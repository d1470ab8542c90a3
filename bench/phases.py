"""The control plane's stages, timed one by one, in a process of their own.

    python -m bench.phases FOLDER OUT.json [--repeats N] [--static-bootstrap FILE ...]

Reads the folder once with the file source (the stage a Kubernetes source
replaces), then translates, builds and serialises the snapshot `repeats`
times, each with a fresh ResourceBuilder (no memoised parts: a cold start).
Writes the timings, the resource counts and the process's peak RSS as JSON
and, when asked, the same resources as a static Envoy bootstrap: the
yardstick of Envoy loading this configuration from a file.

A child process keeps the benchmark's own memory out of the peak RSS and the
product's imports out of the benchmark.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xds_ingress.cache import build_snapshot
from xds_ingress.resources import types
from xds_ingress.resources.builder import ResourceBuilder, Resources
from xds_ingress.resources.encoded import message_of
from xds_ingress.resources.static import render_static_bootstrap
from xds_ingress.sources.file import FileSource
from xds_ingress.store import Store
from xds_ingress.translate import ListenerSettings, translate

COUNTED_TYPES = {
    "clusters": types.CLUSTER,
    "endpoints": types.ENDPOINT,
    "listeners": types.LISTENER,
    "routes": types.ROUTE,
    "secrets": types.SECRET,
}


def settings(*, http_port: int, https_port: int) -> ListenerSettings:
    # What `xds-ingress serve --source FOLDER --listen-address 127.0.0.1` uses.
    return ListenerSettings(
        listen_address="127.0.0.1",
        http_port=http_port,
        https_port=https_port,
        claim_classless=True,
    )


def measure(
    folder: Path, *, repeats: int, http_port: int, https_port: int
) -> tuple[dict[str, Any], Resources]:
    started = time.perf_counter()
    cpu_started = _cpu_seconds()
    source = FileSource(folder)
    objects = source.scan() or ()
    read_seconds = time.perf_counter() - started
    # This process and the workers the file source parsed on (reaped by now).
    read_cpu_seconds = _cpu_seconds() - cpu_started

    started = time.perf_counter()
    store = Store()
    store.replace_all(objects, origin=f"file:{folder}")
    view = store.view()
    store_seconds = time.perf_counter() - started

    listener_settings = settings(http_port=http_port, https_port=https_port)
    timings: dict[str, list[float]] = {"translate": [], "build": [], "serialise": []}
    # The same stages in this process's CPU time: steadier than wall time
    # on a machine other work shares.
    cpu_timings: dict[str, list[float]] = {"translate": [], "build": [], "serialise": []}
    resources: Resources = {}
    conditions = 0
    version = ""
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        translation = translate(view, settings=listener_settings)
        built, cpu_built = time.perf_counter(), time.process_time()
        resources = ResourceBuilder().build(translation.config)
        serialising, cpu_serialising = time.perf_counter(), time.process_time()
        snapshot = build_snapshot(resources)
        version = snapshot.version
        done, cpu_done = time.perf_counter(), time.process_time()
        timings["translate"].append(built - started)
        timings["build"].append(serialising - built)
        timings["serialise"].append(done - serialising)
        cpu_timings["translate"].append(cpu_built - cpu_started)
        cpu_timings["build"].append(cpu_serialising - cpu_built)
        cpu_timings["serialise"].append(cpu_done - cpu_serialising)
        conditions = len(translation.conditions)

    report = {
        "objects": len(objects),
        "conditions": conditions,
        "read_seconds": read_seconds,
        "read_cpu_seconds": read_cpu_seconds,
        "read_workers": source.workers,
        "store_seconds": store_seconds,
        "timings": timings,
        "cpu_timings": cpu_timings,
        # The content hash: equal for equal configurations, across code changes.
        "snapshot_version": version,
        "counts": {key: len(resources.get(url, {})) for key, url in COUNTED_TYPES.items()},
        "virtual_hosts": virtual_host_count(resources),
        "type_counts": {url: len(by_name) for url, by_name in resources.items()},
        # ru_maxrss is in KiB on Linux.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    return report, resources


def _cpu_seconds() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def virtual_host_count(resources: Resources) -> int:
    return sum(
        len(message_of(route_config).virtual_hosts)
        for route_config in resources.get(types.ROUTE, {}).values()
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.phases")
    parser.add_argument("folder", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--https-port", type=int, required=True)
    parser.add_argument("--static-bootstrap", type=Path, default=None)
    parser.add_argument("--static-admin-port", type=int, default=0)
    args = parser.parse_args(argv)
    report, resources = measure(
        args.folder, repeats=args.repeats, http_port=args.http_port, https_port=args.https_port
    )
    if args.static_bootstrap is not None:
        started = time.perf_counter()
        document = render_static_bootstrap(
            resources,
            node_id="bench-static",
            node_cluster="bench",
            admin_address=f"127.0.0.1:{args.static_admin_port}",
        )
        args.static_bootstrap.write_text(json.dumps(document))
        report["static_render_seconds"] = time.perf_counter() - started
        report["static_bootstrap_bytes"] = args.static_bootstrap.stat().st_size
    args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
