"""The Kubernetes source: one list+watch loop (KindWatch) per kind the translation reads.

Every kind is its own store origin, so a relist of Services replaces only
Services. `synced` is the startup barrier: it is set once every kind's first
list is in the store, and the pipeline publishes nothing before that, so an
Envoy never sees routes without their backends at boot. A kind whose list
keeps failing (the API server is down, RBAC forbids it) holds the barrier
shut and says so in the log on every retry; a Gateway API kind whose CRD
is not installed does not (it has no objects yet; see kube_watch).

`namespace` scopes the namespaced kinds (--watch-namespace); cluster-scoped
kinds (IngressClass) are always watched cluster-wide.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import logging
from collections.abc import Callable, Sequence

from kubernetes.client import ApiClient, Configuration

from xds_ingress.sources.backoff import Backoff
from xds_ingress.sources.kube_api import KubeApi
from xds_ingress.sources.kube_kinds import ALL_KINDS, WatchedKind
from xds_ingress.sources.kube_watch import (
    DEFAULT_WATCH_TIMEOUT_SECONDS,
    KindWatch,
    WatchObserver,
    absent_backoff,
)
from xds_ingress.sources.sink import ObjectSink

log = logging.getLogger(__name__)


class KubernetesSource:
    """Feeds a sink from the cluster until cancelled; `synced` is the startup barrier."""

    def __init__(
        self,
        *,
        configuration: Configuration,
        namespace: str | None = None,
        kinds: Sequence[WatchedKind] = ALL_KINDS,
        watch_timeout_seconds: int = DEFAULT_WATCH_TIMEOUT_SECONDS,
        backoff: Callable[[], Backoff] = Backoff,
        absent: Callable[[], Backoff] = absent_backoff,
        observer: WatchObserver | None = None,
    ) -> None:
        self.namespace = namespace
        self.kinds = tuple(kinds)
        self.synced = asyncio.Event()
        self.watches: tuple[KindWatch, ...] = ()
        self._configuration = copy.deepcopy(configuration)
        # Every watch holds a connection for minutes; with fewer pooled
        # connections than watches, urllib3 would open and discard one per
        # request instead of reusing it.
        self._configuration.connection_pool_maxsize = max(
            self._configuration.connection_pool_maxsize or 0, len(self.kinds) + 2
        )
        # KindWatch retries with backoff; urllib3's own instant retries of a
        # refused connection would only triple the requests and the log lines.
        self._configuration.retries = False
        self._watch_timeout = watch_timeout_seconds
        self._backoff = backoff
        self._absent = absent
        self._observer = observer

    def resync(self) -> None:
        """List every kind again (what a 410 does to one); nothing that still exists is dropped."""
        for watch in self.watches:
            watch.resync()

    async def run(self, sink: ObjectSink) -> None:
        """List and watch every kind into `sink` until cancelled."""
        # One thread per kind: each watch has at most one blocking call in
        # flight, and a private pool means long watch reads can never starve
        # the loop's default executor (asyncio.to_thread) of threads.
        executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=len(self.kinds), thread_name_prefix="kube-watch"
        )
        client = ApiClient(self._configuration)
        api = KubeApi(client)
        self.watches = tuple(
            KindWatch(
                api=api,
                kind=kind,
                namespace=self.namespace if kind.namespaced else None,
                sink=sink,
                executor=executor,
                watch_timeout_seconds=self._watch_timeout,
                backoff=self._backoff(),
                absent=self._absent(),
                observer=self._observer,
            )
            for kind in self.kinds
        )
        scope = f"namespace {self.namespace}" if self.namespace else "all namespaces"
        log.info("watching %s in %s", ", ".join(kind.kind for kind in self.kinds), scope)
        try:
            async with asyncio.TaskGroup() as group:
                for watch in self.watches:
                    group.create_task(watch.run(), name=f"kube-watch-{watch.kind.kind}")
                group.create_task(self._open_barrier(), name="kube-synced")
        finally:
            # Cancelled watches have already stopped their streams; a list
            # still in flight ends within its request timeout on its own.
            executor.shutdown(wait=False, cancel_futures=True)
            client.close()

    async def _open_barrier(self) -> None:
        for watch in self.watches:
            await watch.synced.wait()
        absent = [watch.kind.kind for watch in self.watches if watch.installed is False]
        if absent:
            log.info(
                "Kubernetes source synced: every kind listed (not installed: %s)",
                ", ".join(absent),
            )
        else:
            log.info("Kubernetes source synced: every kind listed")
        self.synced.set()
