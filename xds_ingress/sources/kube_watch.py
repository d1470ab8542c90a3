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

A kind served by a CRD that may be missing (`WatchedKind.optional`, the
Gateway API) treats 404 as "the CRD is not installed": its objects are
none (dropping any held, for a CRD that was removed), it counts as synced
so the startup barrier does not wait for a CRD nobody installed, and it
lists again on a slow backoff until the CRD appears. Polling the kind's own
list costs one small 404 per interval and needs no permission beyond the
list the watch needs anyway; watching customresourcedefinitions instead
would react faster but need cluster-wide read of every CRD.

Bookmarks carry only a resourceVersion; it is what the next watch resumes
from (`resource_version`), and `bookmarks` counts them.

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
from typing import Any, Protocol, TypeVar

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
NOT_FOUND = 404


def absent_backoff() -> Backoff:
    """How often a missing CRD is looked for: soon after startup, then every 10 s at most."""
    return Backoff(initial_seconds=1.0, max_seconds=10.0)


class WatchObserver(Protocol):
    """What a KindWatch reports, for metrics; every method defaults to doing nothing.

    Called on the event loop's thread; must return at once.
    """

    def listed(self, kind: str, *, objects: int, relist: bool) -> None:
        """A list completed (`relist`: not the first one)."""
        return None

    def events(self, kind: str, *, count: int) -> None:
        """`count` watch events arrived (bookmarks included)."""
        return None

    def bookmark(self, kind: str, *, resource_version: str) -> None:
        """A bookmark moved the resourceVersion the next watch resumes from."""
        return None

    def expired(self, kind: str) -> None:
        """410 Gone: the kind is listed again."""
        return None

    def absent(self, kind: str) -> None:
        """The kind's CRD is not installed (404); looked for again later."""
        return None


class QuietObserver(WatchObserver):
    """The default WatchObserver: reports go nowhere."""


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
    bookmarks: int = 0
    bookmark_resource_version: str = ""  # of the last bookmark in the batch


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
        absent: Backoff | None = None,
        observer: WatchObserver | None = None,
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
        self._absent_backoff = absent if absent is not None else absent_backoff()
        self._observer: WatchObserver = observer if observer is not None else QuietObserver()
        self.lists = 0  # how many lists completed; read by tests and logs
        self.bookmarks = 0  # how many bookmarks arrived
        # Whether the kind's CRD was found by the last list (None: not asked yet).
        self.installed: bool | None = None

    @property
    def resource_version(self) -> str | None:
        """Where the next watch resumes from; None: it lists first."""
        return self._resource_version

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
                self._observer.expired(self.kind.kind)
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
                if error.status == NOT_FOUND and self.kind.optional:
                    if self._resource_version is not None and not listed:
                        # From a watch: only a list says the CRD is gone,
                        # before its objects are dropped.
                        self._resource_version = None
                        await self._pause(str(error))
                    else:
                        await self._not_installed()
                    continue
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

    async def _not_installed(self) -> None:
        """The CRD is missing (or was removed): no objects, synced, look again later."""
        self._resource_version = None
        if self.installed is not False:
            log.info(
                "%s: not served by the API server (is its CRD installed?); no objects until it is",
                self._what,
            )
            self._sink.replace_all((), origin=self.origin)
            self.installed = False
        self.synced.set()
        self._observer.absent(self.kind.kind)
        await asyncio.sleep(self._absent_backoff.next_delay())

    async def _list(self) -> None:
        listed = await self._blocking(_list_objects, self._api, self.kind, self.namespace)
        if not listed.resource_version:
            raise ApiError(f"{self.kind.kind} list has no resourceVersion to watch from")
        self._sink.replace_all(listed.objects, origin=self.origin)
        self._resource_version = listed.resource_version
        self.lists += 1
        if self.installed is False:
            log.info("%s: now served by the API server", self._what)
        self.installed = True
        self._absent_backoff.reset()
        self._observer.listed(
            self.kind.kind, objects=len(listed.objects), relist=self.synced.is_set()
        )
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
        self._observer.events(self.kind.kind, count=batch.events)
        if batch.bookmarks:
            self.bookmarks += batch.bookmarks
            self._observer.bookmark(
                self.kind.kind, resource_version=batch.bookmark_resource_version
            )

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
        if kind.keep is not None and not kind.keep(item):
            continue
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
    bookmarks = 0
    bookmark_resource_version = ""
    for event in events:
        metadata = event.object.get("metadata")
        if isinstance(metadata, dict) and isinstance(metadata.get("resourceVersion"), str):
            resource_version = metadata["resourceVersion"]
        if event.type == "BOOKMARK":
            bookmarks += 1
            bookmark_resource_version = resource_version
            continue
        obj = _parse(event.object, kind=kind)
        if obj is None:
            continue
        if event.type == "DELETED" or (kind.keep is not None and not kind.keep(event.object)):
            # One we no longer keep is gone for us (a delete of one never
            # stored is a no-op for the store).
            updates.append(obj.key)
        elif event.type in ("ADDED", "MODIFIED"):
            updates.append(obj)
        else:
            log.warning("%s watch: unknown event type %r; ignored", kind.kind, event.type)
    return _Batch(
        updates=tuple(updates),
        resource_version=resource_version,
        events=len(events),
        bookmarks=bookmarks,
        bookmark_resource_version=bookmark_resource_version,
    )


def _parse(document: dict[str, Any], *, kind: WatchedKind) -> KubeObject | None:
    try:
        return parse_object(document)
    except ObjectError as error:
        # Names the object, never its content: this may be a Secret.
        log.warning("%s: %s; ignored", kind.kind, error)
        return None
