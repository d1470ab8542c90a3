"""One list+watch loop for one kind, feeding the store.

The loop is the reflector every Kubernetes controller runs:

1. list every object (in pages) and hand the complete set to the sink with
   `replace_all`, which diffs it against what the store holds for this kind:
   a relist never drops an object that still exists, and removes exactly
   the ones that went away while we were not watching;
2. watch from the list's resourceVersion, with bookmarks, applying each
   event; a bookmark (or any event) moves the resourceVersion on, so that a
   watch that ends is resumed from where it stopped, without a list;
3. 410 Gone (the resourceVersion is older than the server keeps): list again;
   any other failure: wait (capped exponential backoff with jitter) and
   resume from the last resourceVersion, or list if there is none.

The HTTP calls block, so they run on a thread pool the source owns; JSON is
decoded and objects are built there too. The sink (the store) is only ever
called from this coroutine, on the event loop's thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from xds_ingress.sources.backoff import Backoff
from xds_ingress.sources.kube_api import (
    WATCH_READ_SLACK_SECONDS,
    ApiError,
    KubeApi,
    ResourceExpired,
    WatchStream,
)
from xds_ingress.sources.kube_kinds import WatchedKind
from xds_ingress.sources.objects import KubeObject, ObjectError, ObjectKey, parse_object
from xds_ingress.sources.sink import ObjectSink

log = logging.getLogger(__name__)

T = TypeVar("T")

# client-go's choice: a watch lasts a random 5 to 10 minutes, so that the
# watches of many clients do not all end (and reconnect) together.
DEFAULT_WATCH_TIMEOUT_SECONDS = 300
# A watch that ends on its own this soon having delivered nothing is a
# server (or proxy) misbehaving; resuming at once would spin, so back off.
MIN_QUIET_WATCH_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class _Listed:
    objects: tuple[KubeObject, ...]
    resource_version: str


@dataclass(frozen=True, slots=True)
class _Batch:
    """Events read from a watch, converted: (object to apply | key to delete)."""

    updates: tuple[KubeObject | ObjectKey, ...]
    resource_version: str
    events: int


class KindWatch:
    """List+watch of one kind into `sink`; `synced` is set after the first list."""

    def __init__(
        self,
        *,
        api: KubeApi,
        kind: WatchedKind,
        namespace: str | None,
        sink: ObjectSink,
        executor: concurrent.futures.Executor,
        watch_timeout_seconds: int = DEFAULT_WATCH_TIMEOUT_SECONDS,
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.kind = kind
        self.namespace = namespace
        self.synced = asyncio.Event()
        self._api = api
        self._sink = sink
        self._executor = executor
        self._watch_timeout = watch_timeout_seconds
        self._backoff = backoff if backoff is not None else Backoff()
        self._rng = rng if rng is not None else random.Random()
        self._resource_version: str | None = None  # None: list before watching
        self._stream: WatchStream | None = None
        self._relist_requested = False
        self.lists = 0  # how many lists completed; read by tests and logs

    @property
    def origin(self) -> str:
        return self.kind.origin

    def resync(self) -> None:
        """Drop the watch and list again, as after a 410; objects that still exist stay."""
        self._relist_requested = True
        if self._stream is not None:
            self._stream.stop()

    async def run(self) -> None:
        """List and watch until cancelled."""
        loop = asyncio.get_running_loop()
        # Each pass makes at least one request that is bounded in time, and a
        # pass that fails, or ends at once having achieved nothing, sleeps
        # first: never a busy loop against a misbehaving server.
        while True:
            started = loop.time()
            listed = False
            try:
                if self._resource_version is None or self._relist_requested:
                    self._relist_requested = False
                    await self._list()
                    listed = True
                delivered = await self._watch()
            except ResourceExpired as error:
                resumed = self._resource_version is not None and not listed
                self._resource_version = None
                if resumed:
                    # The usual case: we resumed a watch from a resourceVersion
                    # the server no longer keeps. List at once.
                    log.info("%s: %s; listing again", self._what, error)
                else:
                    # Expired straight after (or during) a list: listing again
                    # at once could spin.
                    await self._pause(str(error))
                continue
            except ApiError as error:
                await self._pause(str(error))
                continue
            except Exception:
                # A bug (ours, or an object we did not foresee) must not end
                # this kind's watch for good and leave the store stale.
                log.exception("%s: list+watch failed", self._what)
                await self._pause("unexpected error")
                continue
            if self._relist_requested:
                continue
            if delivered:
                self._backoff.reset()
            elif loop.time() - started < MIN_QUIET_WATCH_SECONDS:
                await self._pause("the watch ended at once, without events")

    @property
    def _what(self) -> str:
        return self.kind.kind if not self.namespace else f"{self.kind.kind} in {self.namespace}"

    async def _pause(self, problem: str) -> None:
        delay = self._backoff.next_delay()
        log.warning("%s: %s; retrying in %.1f s", self._what, problem, delay)
        await asyncio.sleep(delay)

    async def _list(self) -> None:
        listed = await self._blocking(_list_objects, self._api, self.kind, self.namespace)
        if not listed.resource_version:
            raise ApiError(f"{self.kind.kind} list has no resourceVersion to watch from")
        self._sink.replace_all(listed.objects, origin=self.origin)
        self._resource_version = listed.resource_version
        self.lists += 1
        if not self.synced.is_set():
            log.info("%s: %d objects listed", self._what, len(listed.objects))
            self.synced.set()
        else:
            log.info("%s: listed again, %d objects", self._what, len(listed.objects))

    async def _watch(self) -> int:
        """Apply events until the watch ends; how many events (bookmarks too) it carried."""
        assert self._resource_version is not None
        timeout = self._watch_timeout + self._rng.randrange(self._watch_timeout + 1)
        stream = await self._blocking(
            self._api.watch,
            self.kind,
            namespace=self.namespace,
            resource_version=self._resource_version,
            timeout_seconds=timeout,
        )
        self._stream = stream
        if self._relist_requested:
            stream.stop()  # resync() came while the list or this call was in flight
        loop = asyncio.get_running_loop()
        # The server ends the watch after `timeout`; the deadline only guards
        # against one that never does.
        deadline = loop.time() + timeout + WATCH_READ_SLACK_SECONDS
        delivered = 0
        try:
            while loop.time() < deadline:
                batch = await self._blocking(_read_batch, stream, self.kind)
                if batch is None:
                    break
                self._apply(batch)
                delivered += batch.events
        finally:
            self._stream = None
            # Wakes the worker thread if we are being cancelled mid-read; it
            # then closes the connection itself.
            stream.stop()
        return delivered

    def _apply(self, batch: _Batch) -> None:
        for update in batch.updates:
            if isinstance(update, KubeObject):
                self._sink.apply(update, origin=self.origin)
            else:
                self._sink.delete(update, origin=self.origin)
        if batch.resource_version:
            self._resource_version = batch.resource_version

    async def _blocking(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        future = self._executor.submit(function, *args, **kwargs)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            # The thread keeps running; a watch it opens for nobody must
            # still be closed.
            future.add_done_callback(_close_orphan)
            raise


def _close_orphan(future: concurrent.futures.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is None:
        result = future.result()
        if isinstance(result, WatchStream):
            result.close()


def _list_objects(api: KubeApi, kind: WatchedKind, namespace: str | None) -> _Listed:
    listed = api.list_all(kind, namespace=namespace)
    objects = []
    for item in listed.items:
        obj = _parse(item, kind=kind)
        if obj is not None:
            objects.append(obj)
    return _Listed(objects=tuple(objects), resource_version=listed.resource_version)


def _read_batch(stream: WatchStream, kind: WatchedKind) -> _Batch | None:
    events = stream.read()
    if events is None:
        return None
    updates: list[KubeObject | ObjectKey] = []
    resource_version = ""
    for event in events:
        metadata = event.object.get("metadata")
        if isinstance(metadata, dict) and isinstance(metadata.get("resourceVersion"), str):
            resource_version = metadata["resourceVersion"]
        if event.type == "BOOKMARK":
            continue
        obj = _parse(event.object, kind=kind)
        if obj is None:
            continue
        if event.type == "DELETED":
            updates.append(obj.key)
        elif event.type in ("ADDED", "MODIFIED"):
            updates.append(obj)
        else:
            log.warning("%s watch: unknown event type %r; ignored", kind.kind, event.type)
    return _Batch(updates=tuple(updates), resource_version=resource_version, events=len(events))


def _parse(document: dict[str, Any], *, kind: WatchedKind) -> KubeObject | None:
    try:
        return parse_object(document)
    except ObjectError as error:
        # Names the object, never its content: this may be a Secret.
        log.warning("%s: %s; ignored", kind.kind, error)
        return None
