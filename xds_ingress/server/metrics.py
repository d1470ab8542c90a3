"""Prometheus metrics of the control plane, in a registry of their own (no globals).

Mostly the xDS server's; the Kubernetes watch counters are here too so one
registry is scraped: `XdsMetrics.kube_watch` is what app.py hands the
Kubernetes source as its `sources.kube_watch.WatchObserver` (matched by
shape, so the server imports nothing of the sources).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from xds_ingress.cache import Snapshot


def _short_type(type_url: str) -> str:
    return type_url.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class KubeWatchMetrics:
    """Watch events and relists per Kubernetes kind (a kube_watch.WatchObserver)."""

    event_count: Counter
    relist_count: Counter

    def listed(self, kind: str, *, objects: int, relist: bool) -> None:
        if relist:
            self.relist_count.labels(kind).inc()

    def events(self, kind: str, *, count: int) -> None:
        self.event_count.labels(kind).inc(count)

    def bookmark(self, kind: str, *, resource_version: str) -> None:
        pass  # counted among the events

    def expired(self, kind: str) -> None:
        pass  # the list that follows counts as the relist

    def absent(self, kind: str) -> None:
        pass


@dataclass
class XdsMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        # (metric, type URL, stream kind) -> the labelled child.
        self._children: dict[tuple[Any, str, str], Any] = {}
        self.streams = Gauge(
            "xds_ingress_streams",
            "Connected xDS streams",
            ["kind"],
            registry=self.registry,
        )
        self.type_streams = Gauge(
            "xds_ingress_type_streams",
            "Connected xDS streams by the types they asked for (an ADS stream counts once "
            "per type)",
            ["type", "kind"],
            registry=self.registry,
        )
        self.pushes = Counter(
            "xds_ingress_pushes_total",
            "Discovery responses sent",
            ["type", "kind"],
            registry=self.registry,
        )
        self.acks = Counter(
            "xds_ingress_acks_total",
            "Discovery responses ACKed by Envoy",
            ["type", "kind"],
            registry=self.registry,
        )
        self.nacks = Counter(
            "xds_ingress_nacks_total",
            "Discovery responses rejected (NACKed) by Envoy",
            ["type", "kind"],
            registry=self.registry,
        )

        self.build_seconds = Histogram(
            "xds_ingress_snapshot_build_seconds",
            "Time to translate the sources and build a snapshot",
            registry=self.registry,
            # From a memoised no-op rebuild (sub-millisecond) to thousands of
            # services built from scratch.
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.resources = Gauge(
            "xds_ingress_snapshot_resources",
            "Resources in the current snapshot of a node group ('' is the default group)",
            ["group", "type"],
            registry=self.registry,
        )

        self.change_to_sent = Histogram(
            "xds_ingress_change_to_sent_seconds",
            "From the first source change of a build to a response carrying it sent to an Envoy",
            ["type", "kind"],
            registry=self.registry,
            # The debounce holdoff (tens of ms) plus the build, up to a stream
            # stuck behind a slow Envoy.
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.sent_to_ack = Histogram(
            "xds_ingress_sent_to_ack_seconds",
            "From a response sent to the Envoy's ACK of it",
            ["type", "kind"],
            registry=self.registry,
            # An Envoy ACKs at once unless a cluster or listener must warm.
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.watch_events = Counter(
            "xds_ingress_watch_events_total",
            "Kubernetes watch events read (bookmarks included), by object kind",
            ["kind"],
            registry=self.registry,
        )
        self.relists = Counter(
            "xds_ingress_relists_total",
            "Kubernetes lists after the first (410 Gone, a failed watch, a resync), by object kind",
            ["kind"],
            registry=self.registry,
        )

    def observe_build(self, seconds: float) -> None:
        self.build_seconds.observe(seconds)

    def observe_snapshot(self, group: str, snapshot: Snapshot) -> None:
        for type_url, of_type in snapshot.types.items():
            self.resources.labels(group, _short_type(type_url)).set(len(of_type.resources))

    def _by_type(self, metric: Any, type_url: str, kind: str) -> Any:
        """`metric.labels(type, kind)`, looked up once: streams call this per message."""
        key = (metric, type_url, kind)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(_short_type(type_url), kind)
        return child

    def pushed(self, type_url: str, kind: str) -> None:
        self._by_type(self.pushes, type_url, kind).inc()

    def acked(self, type_url: str, kind: str) -> None:
        self._by_type(self.acks, type_url, kind).inc()

    def type_opened(self, type_url: str, kind: str) -> None:
        self.type_streams.labels(_short_type(type_url), kind).inc()

    def type_closed(self, type_url: str, kind: str) -> None:
        self.type_streams.labels(_short_type(type_url), kind).dec()

    def observe_change_to_sent(self, type_url: str, kind: str, seconds: float) -> None:
        self._by_type(self.change_to_sent, type_url, kind).observe(seconds)

    def observe_sent_to_ack(self, type_url: str, kind: str, seconds: float) -> None:
        self._by_type(self.sent_to_ack, type_url, kind).observe(seconds)

    @property
    def kube_watch(self) -> KubeWatchMetrics:
        """These metrics as the Kubernetes source's WatchObserver."""
        return KubeWatchMetrics(event_count=self.watch_events, relist_count=self.relists)

    def nacked(self, type_url: str, kind: str) -> None:
        self.nacks.labels(_short_type(type_url), kind).inc()

    def nack_count(self, type_url: str | None = None) -> float:
        """Total NACKs, optionally of one type (for tests and the admin API)."""
        total = 0.0
        for metric in self.nacks.collect():
            for sample in metric.samples:
                if not sample.name.endswith("_total"):
                    continue
                if type_url is None or sample.labels["type"] == _short_type(type_url):
                    total += sample.value
        return total
