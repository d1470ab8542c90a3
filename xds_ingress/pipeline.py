"""From source changes to published snapshots: debounce, translate, build, publish.

Changes are debounced with a holdoff (wait this long after the last change)
and a maximum holdoff (never wait longer than this after the first), so a
burst of edits costs one rebuild and a steady trickle still gets through.
Nothing is published before the sources have finished their first read (the
startup barrier): an Envoy must never see a half-empty configuration.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from xds_ingress import ir
from xds_ingress.cache import InconsistentSnapshotError, SnapshotCache, build_snapshot
from xds_ingress.resources.builder import ResourceBuilder

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Debounce:
    holdoff_seconds: float = 0.05
    max_holdoff_seconds: float = 0.5


@dataclass
class BuildReport:
    """What the last rebuild did; read by tests and the CLI."""

    builds: int = 0
    published: int = 0
    last_version: str = ""
    conditions: tuple[ir.Condition, ...] = field(default_factory=tuple)


class Pipeline:
    def __init__(
        self,
        *,
        translate: Callable[[], ir.Translation],
        cache: SnapshotCache,
        group: str,
        debounce: Debounce = Debounce(),
        builder: ResourceBuilder | None = None,
        observe_build: Callable[[float], None] | None = None,
        observe_translation: Callable[[ir.Translation], None] | None = None,
    ) -> None:
        self._translate = translate
        self._cache = cache
        self._group = group
        self._debounce = debounce
        self._builder = builder if builder is not None else ResourceBuilder()
        # Told each successful build's duration in seconds (a metrics histogram).
        self._observe_build = observe_build
        # Told each translation that was built and published (or was already
        # current): the status stage maps it to conditions and NACK origins.
        self._observe_translation = observe_translation
        self._changed = asyncio.Event()
        # Set once the first snapshot is published: readiness waits on it, so
        # no Envoy is sent to a replica that has nothing to give it yet.
        self.first_published = asyncio.Event()
        self._first_change: float | None = None
        self._last_change = 0.0
        self.report = BuildReport()

    def changed(self) -> None:
        """Note that a source changed; cheap, callable from any callback."""
        now = time.monotonic()
        if self._first_change is None:
            self._first_change = now
        self._last_change = now
        self._changed.set()

    async def run(self, *, synced: asyncio.Event) -> None:
        await synced.wait()
        log.info("sources synced; building the first snapshot")
        # Changes seen before the barrier are all in this first build; left
        # set, they would trigger a second, no-op build that holds the event
        # loop while Envoys wait for their first push.
        self._changed.clear()
        self._first_change = None
        self.rebuild()
        while True:
            await self._changed.wait()
            await self._hold_off()
            self._changed.clear()
            self._first_change = None
            self.rebuild()

    async def _hold_off(self) -> None:
        while True:
            now = time.monotonic()
            first = self._first_change if self._first_change is not None else now
            quiet_at = self._last_change + self._debounce.holdoff_seconds
            deadline = min(quiet_at, first + self._debounce.max_holdoff_seconds)
            if now >= deadline:
                return
            await asyncio.sleep(deadline - now)

    def rebuild(self) -> None:
        started = time.perf_counter()
        self.report.builds += 1
        try:
            translation = self._translate()
            self._log_new_conditions(translation.conditions)
            snapshot = build_snapshot(self._builder.build(translation.config))
            published = self._cache.set_snapshot(self._group, snapshot)
        except InconsistentSnapshotError as error:
            # A translator bug, not a user error: keep serving the last good
            # snapshot rather than make Envoy warm forever.
            log.error("snapshot not published, it is inconsistent: %s", error)
            return
        except Exception:
            # Same reasoning for any other bug: the last good snapshot stays.
            log.exception("snapshot not published: the build failed")
            return
        if self._observe_build is not None:
            self._observe_build(time.perf_counter() - started)
        if self._observe_translation is not None:
            try:
                self._observe_translation(translation)
            except Exception:
                # Status is a side output: its bug must not stop the pipeline.
                log.exception("the status stage failed on a build")
        if published:
            self.first_published.set()
            self.report.published += 1
            self.report.last_version = snapshot.version
            log.info(
                "published snapshot %s (%s) in %.1f ms",
                snapshot.version,
                ", ".join(
                    f"{len(snapshot.of_type(url).resources)} {url.rsplit('.', 1)[-1]}"
                    for url in sorted(snapshot.types)
                ),
                (time.perf_counter() - started) * 1000,
            )

    def _log_new_conditions(self, conditions: tuple[ir.Condition, ...]) -> None:
        previous = set(self.report.conditions)
        for condition in conditions:
            if condition in previous or condition.status is ir.ConditionStatus.TRUE:
                continue
            log.warning(
                "%s: %s=%s %s: %s",
                condition.object,
                condition.type,
                condition.status,
                condition.reason,
                condition.message,
            )
        self.report.conditions = conditions
