"""The running control plane: source → store → pipeline → cache → xDS server.

`ControlPlane` wires the stages together and owns their tasks, so the CLI,
the demo and the tests start and stop the same thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

import grpc

from xds_ingress import ir
from xds_ingress.cache import DEFAULT_GROUP, SnapshotCache
from xds_ingress.pipeline import Debounce, Pipeline
from xds_ingress.server.grpc_server import start_grpc_server
from xds_ingress.server.services import XdsServer
from xds_ingress.settings import ServeSettings
from xds_ingress.sources.file import FileSource
from xds_ingress.store import Store
from xds_ingress.translate import translate
from xds_ingress.translate.settings import ListenerSettings

log = logging.getLogger(__name__)


@dataclass
class ControlPlane:
    settings: ServeSettings
    cache: SnapshotCache
    store: Store
    xds: XdsServer
    pipeline: Pipeline
    source: FileSource
    server: grpc.aio.Server | None = None
    port: int = 0
    _tasks: tuple[asyncio.Task[None], ...] = ()

    @classmethod
    def from_settings(cls, settings: ServeSettings) -> ControlPlane:
        cache = SnapshotCache()
        store = Store()
        listener_settings = ListenerSettings(
            listen_address=settings.listen_address,
            http_port=settings.http_port,
            https_port=settings.https_port,
            # Every object in a folder is meant for us.
            claim_classless=True,
        )

        def translate_store() -> ir.Translation:
            return translate(store.view(), settings=listener_settings)

        pipeline = Pipeline(
            translate=translate_store,
            cache=cache,
            group=DEFAULT_GROUP,
            debounce=Debounce(
                holdoff_seconds=settings.holdoff_seconds,
                max_holdoff_seconds=settings.max_holdoff_seconds,
            ),
        )
        store.subscribe(lambda _change: pipeline.changed())
        return cls(
            settings=settings,
            cache=cache,
            store=store,
            xds=XdsServer(cache=cache),
            pipeline=pipeline,
            source=FileSource(Path(settings.source)),
        )

    async def start(self) -> None:
        self.server, self.port = await start_grpc_server(
            xds=self.xds, address=str(self.settings.xds_address)
        )
        log.info("xDS server listening on %s:%d", self.settings.xds_address.host, self.port)
        self._tasks = (
            asyncio.create_task(self.source.run(self.store), name="file-source"),
            asyncio.create_task(self.pipeline.run(synced=self.source.synced), name="pipeline"),
        )
        for task in self._tasks:
            task.add_done_callback(_crash_loudly)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.server is not None:
            await self.server.stop(grace=1.0)


def _crash_loudly(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.critical("%s stopped", task.get_name(), exc_info=task.exception())


async def wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def serve(settings: ServeSettings) -> None:
    control_plane = ControlPlane.from_settings(settings)
    await control_plane.start()
    try:
        await wait_for_signal()
    finally:
        log.info("stopping")
        await control_plane.stop()
