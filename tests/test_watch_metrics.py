"""Kubernetes watch events and relists, counted per kind, scraped from /metrics.

The Kubernetes source runs against the real API server of
tests/kube_apiserver.py and reports to the server's metrics
(`XdsMetrics.kube_watch`, a kube_watch.WatchObserver by shape).
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request

import pytest
from kube_apiserver import KubeCluster
from kubernetes import client as kube
from peers import wait_until
from prometheus_client.parser import text_string_to_metric_families

from xds_ingress.server.metrics import XdsMetrics
from xds_ingress.server.metrics_http import start_metrics_server
from xds_ingress.sources.backoff import Backoff
from xds_ingress.sources.kube_client import load_configuration
from xds_ingress.sources.kubernetes import KubernetesSource
from xds_ingress.store import Store

pytestmark = pytest.mark.timeout(60)


def scrape(port: int) -> dict[tuple[str, str], float]:
    """(sample name, kind label) -> value, for the watch counters."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text: str = reply.read().decode()
    return {
        (sample.name, sample.labels.get("kind", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith(("xds_ingress_watch_events", "xds_ingress_relists"))
    }


def service(name: str) -> dict[str, object]:
    return {"metadata": {"name": name}, "spec": {"ports": [{"name": "grpc", "port": 50051}]}}


async def test_watch_events_and_relists_are_counted_per_kind(
    kube_cluster: KubeCluster, kube_namespace: str
) -> None:
    metrics = XdsMetrics()
    served = start_metrics_server(metrics=metrics, host="127.0.0.1", port=0)
    source = KubernetesSource(
        configuration=load_configuration(kubeconfig=str(kube_cluster.kubeconfig)),
        namespace=kube_namespace,
        backoff=lambda: Backoff(initial_seconds=0.05, max_seconds=0.5),
        observer=metrics.kube_watch,
    )
    task = asyncio.create_task(source.run(Store()))
    core = kube.CoreV1Api(kube_cluster.api_client())
    try:
        await asyncio.wait_for(source.synced.wait(), timeout=15)

        async def counted() -> dict[tuple[str, str], float]:
            return await asyncio.to_thread(scrape, served.port)

        # The first list of each kind is no relist.
        assert (await counted()).get(("xds_ingress_relists_total", "Service"), 0) == 0

        for name in ("one", "two"):
            core.create_namespaced_service(kube_namespace, service(name))
        core.delete_namespaced_service("one", kube_namespace)

        async def three_service_events() -> bool:
            found = await counted()
            return found.get(("xds_ingress_watch_events_total", "Service"), 0) >= 3

        await wait_until(three_service_events, timeout=15, message="3 Service watch events")

        # A resync lists every kind again (every kind served: CRDs of the
        # Gateway API may be missing here).
        source.resync()

        async def relisted() -> bool:
            found = await counted()
            return all(
                found.get(("xds_ingress_relists_total", kind), 0) >= 1
                for kind in ("Service", "Ingress", "EndpointSlice", "Secret")
            )

        await wait_until(relisted, timeout=15, message="the core kinds relisted")
        found = await counted()
        assert found[("xds_ingress_relists_total", "Service")] == 1
        assert found[("xds_ingress_watch_events_total", "Service")] >= 3
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await served.stop()
