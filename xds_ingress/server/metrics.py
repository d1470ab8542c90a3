"""Prometheus metrics of the xDS server, in a registry of their own (no globals)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge


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
