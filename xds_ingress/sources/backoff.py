"""Capped exponential backoff with jitter, for retrying a failing API server.

Jitter (each delay drawn uniformly between half the step and the step)
keeps a fleet of control planes that lost the API server at the same moment
from coming back in lockstep, which would hit it with synchronised lists.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True, kw_only=True)
class Backoff:
    """The delay before the next retry; `reset()` after a success."""

    initial_seconds: float = 0.2
    max_seconds: float = 30.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    _step: float = field(default=0.0, init=False)

    def next_delay(self) -> float:
        self._step = (
            self.initial_seconds
            if self._step == 0.0
            else min(self._step * self.factor, self.max_seconds)
        )
        # Never less than half the step, so retries still slow down.
        return self.rng.uniform(self._step / 2, self._step)

    def reset(self) -> None:
        self._step = 0.0
