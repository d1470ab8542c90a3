"""What a scenario measured, summarised, and whether it met its target.

Every metric keeps all its samples (one per run) so the JSON can be
re-analysed; the summary is the median with min and max, as issue 7 asks.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class Metric:
    """One measured quantity of a case, with a sample per run."""

    unit: str
    description: str
    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def to_json(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "description": self.description,
            "median": self.median,
            "min": self.min,
            "max": self.max,
            "values": list(self.values),
        }


@dataclass(frozen=True, slots=True)
class MetricSpec:
    unit: str
    description: str


@dataclass
class CaseResult:
    """All runs of one case of a scenario (e.g. cold start of 10k Services)."""

    label: str
    params: Mapping[str, Any]
    metrics: dict[str, Metric] = field(default_factory=dict)
    # Facts about the case that are not per-run samples (resource counts,
    # versions, the diagnosis of a failed run).
    notes: dict[str, Any] = field(default_factory=dict)

    def median(self, name: str) -> float | None:
        metric = self.metrics.get(name)
        return None if metric is None else metric.median

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "params": dict(self.params),
            "metrics": {name: metric.to_json() for name, metric in self.metrics.items()},
            "notes": self.notes,
        }


def collect(
    samples: Sequence[Mapping[str, float]], specs: Mapping[str, MetricSpec]
) -> dict[str, Metric]:
    """Per-run dicts of values → one Metric per name (names without a spec are dropped)."""
    metrics: dict[str, Metric] = {}
    for name, spec in specs.items():
        values = tuple(sample[name] for sample in samples if name in sample)
        if values:
            metrics[name] = Metric(unit=spec.unit, description=spec.description, values=values)
    return metrics


@dataclass(frozen=True, slots=True)
class TargetResult:
    """A target of issue 7, judged from a scenario's medians."""

    name: str
    description: str
    value: float | None
    threshold: float
    unit: str
    # None: not measured in this run (too small a size, scenario skipped),
    # or not judged.
    met: bool | None
    note: str = ""
    # False: measured, but under conditions the target does not describe
    # (the note says which); shown, never counted as met or missed.
    judged: bool = True

    @property
    def verdict(self) -> str:
        if not self.judged:
            return "not judged"
        if self.met is None:
            return "not measured"
        return "met" if self.met else "NOT met"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "value": self.value,
            "threshold": self.threshold,
            "unit": self.unit,
            "met": self.met,
            "verdict": self.verdict,
            "judged": self.judged,
            "note": self.note,
        }


def at_most(
    *, name: str, description: str, value: float | None, threshold: float, unit: str, note: str = ""
) -> TargetResult:
    return TargetResult(
        name=name,
        description=description,
        value=value,
        threshold=threshold,
        unit=unit,
        met=None if value is None else value <= threshold,
        note=note,
    )


def not_judged(target: TargetResult, *, why: str) -> TargetResult:
    """`target` as measured, with its verdict withheld for the reason `why`."""
    return replace(target, met=None, judged=False, note=why)


def at_least(
    *, name: str, description: str, value: float | None, threshold: float, unit: str, note: str = ""
) -> TargetResult:
    return TargetResult(
        name=name,
        description=description,
        value=value,
        threshold=threshold,
        unit=unit,
        met=None if value is None else value >= threshold,
        note=note,
    )


@dataclass
class ScenarioResult:
    name: str
    title: str
    cases: list[CaseResult] = field(default_factory=list)
    targets: list[TargetResult] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "cases": [case.to_json() for case in self.cases],
            "targets": [target.to_json() for target in self.targets],
            "notes": self.notes,
        }


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile (a value that was measured, never interpolated)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]
