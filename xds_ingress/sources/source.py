"""What the control plane needs of a source, whichever it is (a folder, the cluster)."""

from __future__ import annotations

import asyncio
from typing import Protocol

from xds_ingress.sources.sink import ObjectSink


class Source(Protocol):
    @property
    def synced(self) -> asyncio.Event:
        """Set once the first complete read is in the sink: the startup barrier."""
        ...

    async def run(self, sink: ObjectSink) -> None:
        """Feed `sink` until cancelled."""
        ...
