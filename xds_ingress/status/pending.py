"""A bounded work queue that keeps one entry per key.

Entries are keys only: the worker reads the newest wanted state for a key
when it gets to it, so a key queued ten times is written once, with what is
wanted by then (newest wins). When full, the oldest key is dropped and
counted; the next change to it queues it again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


class Pending(Generic[K]):
    def __init__(self, *, capacity: int) -> None:
        self._keys: OrderedDict[K, None] = OrderedDict()
        self._capacity = capacity
        self._ready = asyncio.Event()
        self.dropped = 0

    def put(self, key: K) -> None:
        if key in self._keys:
            return
        if len(self._keys) >= self._capacity:
            oldest, _ = self._keys.popitem(last=False)
            self.dropped += 1
            log.warning("status queue full (%d); dropped the write for %s", self._capacity, oldest)
        self._keys[key] = None
        self._ready.set()

    async def get(self) -> K:
        while not self._keys:
            self._ready.clear()
            await self._ready.wait()
        key, _ = self._keys.popitem(last=False)
        return key

    def clear(self) -> None:
        self._keys.clear()

    def __len__(self) -> int:
        return len(self._keys)
