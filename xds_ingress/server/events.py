"""One queue per stream merging Envoy's requests with snapshot wake-ups.

A stream reacts to two things: a request from Envoy and a new snapshot. Both
land in one queue, so a stream is a single loop with no locks. Wake-ups are
coalesced: however many snapshots are published while a stream is busy, it
is woken once and then reads the newest, so a slow Envoy never makes the
queue grow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Request = TypeVar("Request")


class Woken:
    """Marker: the snapshot may have changed."""


class Ended:
    """Marker: Envoy closed its side of the stream."""


WOKEN = Woken()
ENDED = Ended()


class StreamEvents(Generic[Request]):
    def __init__(self) -> None:
        self._queue: asyncio.Queue[Request | Woken | Ended] = asyncio.Queue()
        self._wake_pending = False
        self._loop = asyncio.get_running_loop()

    def wake(self) -> None:
        """Called by the cache; safe from any thread."""
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            # The pipeline publishes on the loop: queue the stream at once,
            # ahead of whatever the publisher schedules after the publish
            # (and without a wake-up write to the loop's self-pipe per stream).
            self._enqueue_wake()
        else:
            self._loop.call_soon_threadsafe(self._enqueue_wake)

    def _enqueue_wake(self) -> None:
        if not self._wake_pending:
            self._wake_pending = True
            self._queue.put_nowait(WOKEN)

    async def feed(self, requests: AsyncIterator[Request]) -> None:
        try:
            async for request in requests:
                self._queue.put_nowait(request)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the peer went away mid-read
            log.debug("stream read ended: %s", error)
        finally:
            self._queue.put_nowait(ENDED)

    async def next_batch(self) -> list[Request | Woken | Ended]:
        """Wait for at least one event, then take everything already queued."""
        batch = [await self._queue.get()]
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if any(isinstance(item, Woken) for item in batch):
            self._wake_pending = False
        return batch
