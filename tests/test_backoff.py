"""The retry delays the Kubernetes source waits between failed requests."""

from __future__ import annotations

import random

from xds_ingress.sources.backoff import Backoff


def test_delays_grow_to_the_cap_with_jitter_and_reset() -> None:
    backoff = Backoff(initial_seconds=0.1, max_seconds=1.0, rng=random.Random(7))
    steps = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    delays = [backoff.next_delay() for _ in steps]
    for delay, step in zip(delays, steps, strict=True):
        assert step / 2 <= delay <= step
    assert len(set(delays)) == len(delays), "no jitter"

    backoff.reset()
    assert 0.05 <= backoff.next_delay() <= 0.1
