"""From source changes to published snapshots: debounce, translate, build, publish.

Changes are debounced with a holdoff (wait this long after the last change)
and a maximum holdoff (never wait longer than this after the first), so a
burst of edits costs one rebuild and a steady trickle still gets through.
A change after a quiet spell is built at once, without the holdoff: quiet
meaning no build for as long as the last build took (or the holdoff, if
shorter), so builds take at most about half the time under a stream of
changes. A lone change that comes sooner waits only for the rest of that
spell; the holdoff is for changes that keep coming.
Nothing is published before the sources have finished their first read (the
startup barrier): an Envoy must never see a half-empty configuration.

When nothing but EndpointSlices changed, the fast path skips translation
and resource building: it reads the endpoints of the affected Backends again
and patches the current snapshot's EDS, after a much shorter holdoff.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from xds_ingress import gc_pause, ir
from xds_ingress.cache import (
    InconsistentSnapshotError,
    Snapshot,
    SnapshotCache,
    build_snapshot,
    make_resource,
)
from xds_ingress.resources import types
from xds_ingress.resources.builder import ResourceBuilder
from xds_ingress.resources.endpoint import build_load_assignment
from xds_ingress.sources.objects import ObjectKey
from xds_ingress.store import Change
from xds_ingress.translate.endpoint_refresh import EndpointRefresh

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Debounce:
    holdoff_seconds: float = 0.05
    max_holdoff_seconds: float = 0.5
    # EndpointSlice-only changes cost a millisecond on the fast path, and a
    # pod that left must leave Envoy's hosts quickly; batch them briefly.
    endpoint_holdoff_seconds: float = 0.005


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
        refresh_endpoints: Callable[[frozenset[ObjectKey]], EndpointRefresh | None] | None = None,
        freeze_heap: bool = True,
    ) -> None:
        self._translate = translate
        # gc.freeze() after the first read and the first build (see run);
        # process-wide, so a caller that owns the process may turn it off.
        self._freeze_heap = freeze_heap
        # The EndpointSlice fast path (None: every change translates in full).
        self._refresh_endpoints = refresh_endpoints
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
        # The first change of the batch being built (time.monotonic()): the
        # xDS server times each push from it (change-to-sent latency).
        self._batch_changed_at: float | None = None
        # What changed since the last build: the slices, if nothing but
        # slices changed; `_pending_full` once anything else did.
        self._pending_slices: set[ObjectKey] = set()
        self._pending_full = False
        # When the last build ended (monotonic) and how long it took: a
        # change that long after it skips the holdoff.
        self._built_at = -math.inf
        self._build_seconds = 0.0
        self.report = BuildReport()

    def changed(self, change: Change | None = None) -> None:
        """Note that a source changed; cheap, callable from any callback.

        `change` None means "anything may have changed": a full translation.
        """
        if change is not None and change.endpoints_only:
            self._pending_slices.update(change.keys)
        else:
            self._pending_full = True
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
        self._take_pending()
        # What the first read and the first build leave (the store, the IR,
        # the snapshot) lives as long as the process, and at 10k Services a
        # full collection walking it stalls the event loop, and every push,
        # for 0.2-0.4 s (measured); the first ones, right after the read and
        # the build, held the first publish up by about a second. Frozen,
        # the collector only walks what was made since; frozen objects that
        # die are still freed by reference counting (they make no cycles).
        if self._freeze_heap:
            gc.freeze()  # the store as read
        with gc_pause.paused(freeze=self._freeze_heap):
            self.rebuild()
        self._built_at = time.monotonic()
        # The next full build is frozen too: it is the first to keep each
        # host's part of the translation (translate/memo.py HostMemo; the
        # first translation works every host out at once), ~8 objects per
        # host that live as long as the first build's. Left young, every
        # full collection walked them (10k Services: 8 ms a pass, was 2.3).
        freeze_next = self._freeze_heap
        while True:
            await self._changed.wait()
            await self._hold_off()
            self._changed.clear()
            self._batch_changed_at = self._first_change
            self._first_change = None
            full, slices = self._take_pending()
            if full or not slices or not self._rebuild_endpoints(slices):
                with gc_pause.paused(freeze=freeze_next):
                    self.rebuild()
                freeze_next = False
            self._built_at = time.monotonic()

    def _take_pending(self) -> tuple[bool, frozenset[ObjectKey]]:
        pending = (self._pending_full, frozenset(self._pending_slices))
        self._pending_full = False
        self._pending_slices = set()
        return pending

    async def _hold_off(self) -> None:
        # The first change after a quiet spell is built at once: a lone edit
        # should not wait out a holdoff meant for bursts. One that comes
        # sooner waits only for the rest of the quiet spell, so builds still
        # take at most about half the time; the holdoff batches a burst,
        # i.e. changes that keep coming meanwhile.
        first_change = self._first_change
        quiet_at = self._built_at + min(self._holdoff(), self._build_seconds)
        if first_change is None or first_change >= quiet_at:
            return
        now = time.monotonic()
        if now < quiet_at:
            await asyncio.sleep(quiet_at - now)
        if self._last_change == first_change:
            return
        while True:
            now = time.monotonic()
            first = self._first_change if self._first_change is not None else now
            quiet_at = self._last_change + self._holdoff()
            deadline = min(quiet_at, first + self._debounce.max_holdoff_seconds)
            if now >= deadline:
                return
            await asyncio.sleep(deadline - now)

    def _holdoff(self) -> float:
        if self._pending_full:
            return self._debounce.holdoff_seconds
        return min(self._debounce.holdoff_seconds, self._debounce.endpoint_holdoff_seconds)

    def rebuild(self) -> None:
        # Translating, building and serialising make no garbage cycles; the
        # stages pause the collector themselves, and this pause spans the
        # steps between them too (at 10k Services one collection there cost
        # a second).
        started = time.perf_counter()
        with gc_pause.paused():
            self._rebuild()
        self._build_seconds = time.perf_counter() - started

    def _rebuild(self) -> None:
        started = time.perf_counter()
        self.report.builds += 1
        try:
            translation = self._translate()
            self._log_new_conditions(translation.conditions)
            # The published snapshot lends its serialised resources to the
            # next: only what the builder made anew is serialised and compared.
            snapshot = build_snapshot(
                self._builder.build(translation.config),
                previous=self._cache.published(self._group),
            )
            published = self._cache.set_snapshot(
                self._group, snapshot, changed_at=self._batch_changed_at
            )
        except InconsistentSnapshotError as error:
            # A translator bug, not a user error: keep serving the last good
            # snapshot rather than make Envoy warm forever.
            log.error("snapshot not published, it is inconsistent: %s", error)
            self._pending_full = True
            return
        except Exception:
            # Same reasoning for any other bug: the last good snapshot stays.
            log.exception("snapshot not published: the build failed")
            # The fast path patches what was published, so it must not
            # follow a translation that never was.
            self._pending_full = True
            return
        if self._observe_build is not None:
            self._observe_build(time.perf_counter() - started)
        self._observe_soon(translation)
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

    def _rebuild_endpoints(self, slices: frozenset[ObjectKey]) -> bool:
        """The fast path: patch the current snapshot's EDS; False: rebuild in full instead."""
        if self._refresh_endpoints is None:
            return False
        current = self._cache.current(self._group)
        if current is None:
            return False
        started = time.perf_counter()
        try:
            refresh = self._refresh_endpoints(slices)
            if refresh is None:
                return False
            self.report.builds += 1
            snapshot = _with_load_assignments(current, refresh.changed)
            # Only endpoints of existing clusters changed: no name comes or
            # goes, so the snapshot stays as consistent as the one it patches.
            published = self._cache.set_snapshot(
                self._group, snapshot, check=False, changed_at=self._batch_changed_at
            )
        except Exception:
            log.exception("the EndpointSlice fast path failed; translating in full")
            return False
        if self._observe_build is not None:
            self._observe_build(time.perf_counter() - started)
        conditions = refresh.translation.conditions
        if conditions is not self.report.conditions and conditions != self.report.conditions:
            self._log_new_conditions(refresh.translation.conditions)
            self._observe_soon(refresh.translation)
        if published:
            self.report.published += 1
            self.report.last_version = snapshot.version
            log.debug(
                "published snapshot %s: endpoints of %d clusters in %.2f ms",
                snapshot.version,
                len(refresh.changed),
                (time.perf_counter() - started) * 1000,
            )
        return True

    def _observe_soon(self, translation: ir.Translation) -> None:
        """Tell the status stage, after the streams the publish woke have run.

        The status stage walks every object when the config changed; run
        inline it would hold every Envoy's push behind it.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._observe(translation)
            return
        loop.call_soon(self._observe, translation)

    def _observe(self, translation: ir.Translation) -> None:
        if self._observe_translation is not None:
            try:
                self._observe_translation(translation)
            except Exception:
                # Status is a side output: its bug must not stop the pipeline.
                log.exception("the status stage failed on a build")

    def _log_new_conditions(self, conditions: tuple[ir.Condition, ...]) -> None:
        # Only problems are logged: the thousands of True conditions are never hashed.
        true = ir.ConditionStatus.TRUE
        previous = {each for each in self.report.conditions if each.status is not true}
        for condition in conditions:
            if condition.status is true or condition in previous:
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


def _with_load_assignments(snapshot: Snapshot, backends: tuple[ir.Backend, ...]) -> Snapshot:
    """`snapshot` with the ClusterLoadAssignments of `backends` rebuilt.

    Every other type keeps its TypeSnapshot object, and with it the version
    and the serialised response it has already computed.
    """
    if not backends:
        return snapshot
    before = snapshot.of_type(types.ENDPOINT)
    endpoints = dict(before.resources)
    for backend in backends:
        if backend.name not in endpoints:
            raise KeyError(f"cluster {backend.name!r} is not in the published snapshot")
        endpoints[backend.name] = make_resource(
            backend.name, types.ENDPOINT, build_load_assignment(backend)
        )
    # Derived, so its version and every stream's comparison cost O(backends).
    after = before.derive(endpoints, (backend.name for backend in backends))
    return Snapshot(types={**snapshot.types, types.ENDPOINT: after})
