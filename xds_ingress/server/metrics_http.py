"""Prometheus metrics over HTTP on --metrics-address (prometheus_client's own server).

The HTTP server runs in a thread of its own, so a scrape reads only
thread-safe metric objects: gauges that follow the cache are set on the
event loop when a snapshot is published, never computed during a scrape.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from xds_ingress.cache import Cancel, SnapshotInspector
from xds_ingress.server.metrics import XdsMetrics


def follow_snapshots(*, cache: SnapshotInspector, metrics: XdsMetrics) -> Cancel:
    """Keep the resources-per-type gauges on the cache's current snapshots."""

    def update() -> None:
        for group in cache.groups():
            snapshot = cache.current(group)
            if snapshot is not None:
                metrics.observe_snapshot(group, snapshot)

    update()
    return cache.watch_all(update)


@dataclass
class MetricsServer:
    httpd: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        port: int = self.httpd.server_address[1]
        return port

    async def stop(self) -> None:
        # shutdown() waits for the serving loop to notice (up to its 0.5 s
        # poll): off the event loop.
        await asyncio.to_thread(self.httpd.shutdown)
        self.httpd.server_close()
        self.thread.join(timeout=5)


def start_metrics_server(*, metrics: XdsMetrics, host: str, port: int) -> MetricsServer:
    """Serve /metrics on host:port (port 0 picks one; see MetricsServer.port)."""
    httpd, thread = start_http_server(port, addr=host, registry=metrics.registry)
    return MetricsServer(httpd=httpd, thread=thread)
