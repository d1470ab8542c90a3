"""New snapshot versions for one WatchSnapshots client, coalesced newest-wins.

A watcher may read slowly (a person paging through grpcurl output, a stalled
network), while the control plane publishes at its own pace. Publishing must
never wait for a watcher, and a watcher must never cost memory in proportion
to how far behind it is. So each watcher keeps, per node group, one slot for
the newest snapshot it has not yet been sent: a newer one replaces it and is
counted as skipped. When the watcher reads, it gets what changed from the
last snapshot it was sent to the newest, computed then; so nothing it was
not shown is lost, and at most two snapshots per group are held (the last
sent and the newest), both shared with the cache.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from xds_ingress.cache import Cancel, Snapshot, SnapshotInspector, TypeDiff, diff


@dataclass(frozen=True)
class SnapshotChange:
    group: str
    snapshot: Snapshot
    # The snapshot last sent to this watcher for the group; None on the first.
    previous: Snapshot | None
    changes: list[TypeDiff]
    skipped: int
    seen_at: float


@dataclass
class _Pending:
    snapshot: Snapshot
    seen_at: float
    skipped: int = 0


class SnapshotFeed:
    """Use as a context manager around the reads, so the cache watch is always cancelled."""

    def __init__(
        self,
        *,
        cache: SnapshotInspector,
        group: str | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._cache = cache
        # None: every group with a snapshot of its own.
        self._group = group
        self._clock = clock
        self._sent: dict[str, Snapshot] = {}
        self._pending: dict[str, _Pending] = {}
        self._ready = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._cancel: Cancel | None = None

    def __enter__(self) -> SnapshotFeed:
        self._cancel = self._cache.watch_all(self._wake)
        self._look()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._cancel is not None:
            self._cancel()
            self._cancel = None

    @property
    def pending(self) -> int:
        """Groups with a version not yet read (at most one slot each)."""
        return len(self._pending)

    def _wake(self) -> None:
        # The cache wakes watchers inside set_snapshot. On the event loop's
        # thread (the pipeline's case) the new version is taken at once, so
        # every publish is seen and counted; from another thread it is taken
        # on the loop.
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._look()
        else:
            self._loop.call_soon_threadsafe(self._look)

    def _groups(self) -> list[str]:
        return self._cache.groups() if self._group is None else [self._group]

    def _look(self) -> None:
        for group in self._groups():
            snapshot = self._cache.current(group)
            if snapshot is None:
                continue
            pending = self._pending.get(group)
            newest = pending.snapshot if pending is not None else self._sent.get(group)
            if newest is not None and newest.version == snapshot.version:
                continue
            self._pending[group] = _Pending(
                snapshot=snapshot,
                seen_at=self._clock(),
                skipped=pending.skipped + 1 if pending is not None else 0,
            )
            self._ready.set()

    async def next(self) -> list[SnapshotChange]:
        """Wait for at least one new version; return every group's newest, by group."""
        while not self._pending:
            self._ready.clear()
            await self._ready.wait()
        taken, self._pending = self._pending, {}
        changes: list[SnapshotChange] = []
        for group in sorted(taken):
            pending = taken[group]
            previous = self._sent.get(group)
            self._sent[group] = pending.snapshot
            if previous is not None and previous.version == pending.snapshot.version:
                # Changed and changed back while unread: nothing to tell.
                continue
            changes.append(
                SnapshotChange(
                    group=group,
                    snapshot=pending.snapshot,
                    previous=previous,
                    changes=diff(previous, pending.snapshot),
                    skipped=pending.skipped,
                    seen_at=pending.seen_at,
                )
            )
        return changes
