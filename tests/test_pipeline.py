"""The pipeline's startup barrier and debounce, seen from what it publishes."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from xds_ingress import gc_pause, ir
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


BUILD_SECONDS = 0.3


async def test_a_lone_change_waits_at_most_a_builds_time_and_a_burst_is_held_off() -> None:
    cache = SnapshotCache()

    def slow_translate() -> ir.Translation:
        # A build that takes long enough to tell "within a build's time of
        # the last build" from "after it".
        time.sleep(BUILD_SECONDS)
        return ir.Translation(config=ir.Config())

    pipeline = Pipeline(
        translate=slow_translate,
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
        # Quiet for longer than a build took since the first build.
        await asyncio.sleep(BUILD_SECONDS + 0.2)
        pipeline.changed()
        await asyncio.sleep(BUILD_SECONDS + 0.05)
        assert pipeline.report.builds == 2, "a lone change waited out the holdoff"
        # Right after that build, within a build's time: a lone change
        # waits for the rest of that time only, not the holdoff.
        pipeline.changed()
        await asyncio.sleep(2 * BUILD_SECONDS + 0.1)
        assert pipeline.report.builds == 3, "a lone change waited out the holdoff"
        # Changes that keep coming (a burst) right after a build: held off.
        pipeline.changed()
        await asyncio.sleep(0.1)
        pipeline.changed()
        await asyncio.sleep(0.5)
        assert pipeline.report.builds == 3, "a burst was not held off"
        await asyncio.sleep(0.6 + BUILD_SECONDS)
        assert pipeline.report.builds == 4
        # Longer after a build than it took, though well within the
        # holdoff: a lone change again (changes made one by one, each
        # after the last was applied, are not held back).
        await asyncio.sleep(BUILD_SECONDS + 0.2)
        pipeline.changed()
        await asyncio.sleep(BUILD_SECONDS + 0.05)
        assert pipeline.report.builds == 5, "a change after the build's own time waited"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_first_two_full_builds_freeze_what_they_keep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second is the first to keep each host's part of the translation."""
    asked: list[bool] = []
    paused = gc_pause.paused

    def recording(*, freeze: bool = False) -> contextlib.AbstractContextManager[None]:
        asked.append(freeze)
        return paused(freeze=False)  # the test process's heap is not frozen

    monkeypatch.setattr(gc_pause, "paused", recording)
    pipeline = Pipeline(
        translate=lambda: ir.Translation(config=ir.Config()),
        cache=SnapshotCache(),
        group=DEFAULT_GROUP,
        debounce=Debounce(holdoff_seconds=0.01, max_holdoff_seconds=0.05),
    )
    synced = asyncio.Event()
    task = asyncio.create_task(pipeline.run(synced=synced))
    synced.set()
    for builds in (2, 3, 4):
        await asyncio.sleep(0.1)
        pipeline.changed()
        await asyncio.sleep(0.1)
        assert pipeline.report.builds == builds
    assert asked.count(True) == 2
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
