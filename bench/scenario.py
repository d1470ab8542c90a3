"""What the runner needs of a scenario: its cases, its metrics, its targets.

A scenario is a few cases (sizes, loads); each case is prepared once and
then run `--runs` times, each run returning one sample of every metric. A
run measures its subject and its yardstick together, in alternating order,
so that the ratio of the two is taken under the same conditions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from bench.results import CaseResult, MetricSpec, TargetResult


class Case(Protocol):
    @property
    def label(self) -> str: ...

    @property
    def params(self) -> Mapping[str, Any]: ...

    def prepare(self, workdir: Path) -> dict[str, Any]:
        """Set up what every run shares (outside the timing); returns notes."""
        ...

    def run_once(self, index: int, workdir: Path) -> dict[str, float]:
        """One run: a sample of each metric, by name. Raises when it fails."""
        ...

    def close(self) -> None:
        """Stop whatever prepare() left running; called even when it failed."""
        ...


class Scenario(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def title(self) -> str: ...

    @property
    def metrics(self) -> Mapping[str, MetricSpec]: ...

    def cases(self, *, quick: bool) -> Sequence[Case]: ...

    def available(self) -> str | None:
        """None when it can run here, else why not (a missing peer)."""
        ...

    def targets(self, cases: Sequence[CaseResult]) -> list[TargetResult]: ...
