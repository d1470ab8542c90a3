"""The pipeline's startup barrier and debounce, seen from what it publishes."""

from __future__ import annotations

import asyncio
import contextlib

from xds_ingress import ir
from xds_ingress.cache import DEFAULT_GROUP, SnapshotCache
from xds_ingress.pipeline import Debounce, Pipeline


async def test_nothing_is_built_before_the_barrier_and_the_first_build_is_not_repeated() -> None:
    cache = SnapshotCache()
    pipeline = Pipeline(
        translate=lambda: ir.Translation(config=ir.Config()),
        cache=cache,
        group=DEFAULT_GROUP,
        debounce=Debounce(holdoff_seconds=0.01, max_holdoff_seconds=0.05),
    )
    synced = asyncio.Event()
    task = asyncio.create_task(pipeline.run(synced=synced))
    # The source's first read arrives as changes before the barrier opens.
    for _ in range(3):
        pipeline.changed()
    await asyncio.sleep(0.1)
    assert pipeline.report.builds == 0
    assert cache.current(DEFAULT_GROUP) is None
    synced.set()
    await asyncio.wait_for(pipeline.first_published.wait(), 5)
    await asyncio.sleep(0.2)
    assert pipeline.report.builds == 1
    # A change after the barrier is built once, after the holdoff.
    pipeline.changed()
    pipeline.changed()
    await asyncio.sleep(0.2)
    assert pipeline.report.builds == 2
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_a_lone_change_is_built_at_once_and_a_burst_after_it_is_held_off() -> None:
    cache = SnapshotCache()
    pipeline = Pipeline(
        translate=lambda: ir.Translation(config=ir.Config()),
        cache=cache,
        group=DEFAULT_GROUP,
        # A holdoff long enough to tell "at once" from "held off".
        debounce=Debounce(holdoff_seconds=1.0, max_holdoff_seconds=2.0),
    )
    synced = asyncio.Event()
    synced.set()
    task = asyncio.create_task(pipeline.run(synced=synced))
    try:
        await asyncio.wait_for(pipeline.first_published.wait(), 5)
        # Quiet for longer than the holdoff since the first build.
        await asyncio.sleep(1.1)
        pipeline.changed()
        await asyncio.sleep(0.2)
        assert pipeline.report.builds == 2, "a lone change waited out the holdoff"
        # Right after that build: the holdoff applies again.
        pipeline.changed()
        await asyncio.sleep(0.5)
        assert pipeline.report.builds == 2, "a change in a burst was not held off"
        await asyncio.sleep(0.8)
        assert pipeline.report.builds == 3
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
