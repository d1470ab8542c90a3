"""Prometheus metrics of the xDS server, in a registry of their own (no globals)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from xds_ingress.cache import Snapshot


def _short_type(type_url: str) -> str:
    return type_url.rsplit(".", 1)[-1]


@dataclass
class XdsMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.streams = Gauge(
            "xds_ingress_streams",
            "Connected xDS streams",
            ["kind"],
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

    def observe_build(self, seconds: float) -> None:
        self.build_seconds.observe(seconds)

    def observe_snapshot(self, group: str, snapshot: Snapshot) -> None:
        for type_url, of_type in snapshot.types.items():
            self.resources.labels(group, _short_type(type_url)).set(len(of_type.resources))

    def pushed(self, type_url: str, kind: str) -> None:
        self.pushes.labels(_short_type(type_url), kind).inc()

    def acked(self, type_url: str, kind: str) -> None:
        self.acks.labels(_short_type(type_url), kind).inc()

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
