"""The running control plane: source → store → pipeline → cache → xDS server.

`ControlPlane` wires the stages together and owns their tasks, so the CLI,
the demo and the tests start and stop the same thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from xds_ingress import ir
from xds_ingress.cache import DEFAULT_GROUP, SnapshotCache
from xds_ingress.pipeline import Debounce, Pipeline
from xds_ingress.server.credentials import server_credentials
from xds_ingress.server.grpc_server import inspection_services, start_grpc_server
from xds_ingress.server.metrics import XdsMetrics
from xds_ingress.server.metrics_http import MetricsServer, follow_snapshots, start_metrics_server
from xds_ingress.server.services import XdsServer
from xds_ingress.settings import KUBERNETES_SOURCE, ServeSettings
from xds_ingress.sources.file import FileSource
from xds_ingress.sources.objects import GRPC_ROUTE, HTTP_ROUTE, KubeObject
from xds_ingress.sources.source import Source
from xds_ingress.status import StatusStage
from xds_ingress.store import Change, Store, StoreView
from xds_ingress.translate import CertificateCache, translate
from xds_ingress.translate.endpoint_refresh import StoreTranslator
from xds_ingress.translate.memo import TranslationMemo
from xds_ingress.translate.settings import ListenerSettings

# The Kubernetes client is imported only with --source kubernetes: it is
# most of this module's import time (0.9 s of 1.3 s), which a folder
# source's cold start would spend before its first publish.
if TYPE_CHECKING:
    from xds_ingress.sources.kube_watch import WatchObserver
    from xds_ingress.status.kube_writer import KubeStatusWriter

log = logging.getLogger(__name__)


@dataclass
class ControlPlane:
    settings: ServeSettings
    cache: SnapshotCache
    store: Store
    xds: XdsServer
    pipeline: Pipeline
    source: Source
    status: StatusStage
    # Writes status to Kubernetes (with --source kubernetes only).
    status_writer: KubeStatusWriter | None = None
    server: grpc.aio.Server | None = None
    port: int = 0
    admin_server: grpc.aio.Server | None = None
    admin_port: int = 0
    health_server: grpc.aio.Server | None = None
    health_port: int = 0
    metrics_server: MetricsServer | None = None
    _tasks: tuple[asyncio.Task[None], ...] = ()

    @classmethod
    def from_settings(
        cls, settings: ServeSettings, *, source: Source | None = None
    ) -> ControlPlane:
        """`source`: the one `settings` names, when the caller made it already."""
        cache = SnapshotCache()
        store = Store()
        # One registry for the server's metrics and the Kubernetes watches'.
        metrics = XdsMetrics()
        if source is None:
            source = _source(settings, watch_observer=metrics.kube_watch)
        status_writer = _status_writer(settings, store=store)
        listener_settings = ListenerSettings(
            listen_address=settings.listen_address,
            http_port=settings.http_port,
            https_port=settings.https_port,
            min_tls_version=ir.TlsVersion(settings.tls_min_version),
            downstream=ir.DownstreamLimits(
                max_connection_duration_s=settings.max_connection_duration_seconds
            ),
            # Every object in a folder is meant for us; in a cluster an
            # Ingress is ours only by its class.
            claim_classless=isinstance(source, FileSource),
        )

        def locate(ref: ir.ObjectRef) -> ir.ObjectRef | None:
            # The object as its source read it: the file to name in a log line.
            obj = store.view().get(ref.kind, ref.namespace, ref.name)
            return obj.ref if obj is not None else None

        # Told every build (conditions, and which objects make which Envoy
        # resource) and every ACK/NACK: a NACK becomes status on the objects.
        status = StatusStage(locate=locate, sink=status_writer)
        xds = XdsServer(cache=cache, observer=status, metrics=metrics)

        # Parsed TLS Secrets, kept between translations: an RSA key takes
        # tens of milliseconds to check.
        certificates = CertificateCache()
        # What each unchanged object translated to, kept between translations.
        memo = TranslationMemo()

        def translate_view(view: StoreView) -> ir.Translation:
            return translate(view, settings=listener_settings, certificates=certificates, memo=memo)

        translator = StoreTranslator(view=store.view, translate=translate_view)
        pipeline = Pipeline(
            translate=translator.full,
            refresh_endpoints=translator.endpoints,
            cache=cache,
            group=DEFAULT_GROUP,
            debounce=Debounce(
                holdoff_seconds=settings.holdoff_seconds,
                max_holdoff_seconds=settings.max_holdoff_seconds,
            ),
            observe_build=xds.metrics.observe_build,
            observe_translation=status.built,
        )
        store.subscribe(pipeline.changed)
        return cls(
            settings=settings,
            cache=cache,
            store=store,
            xds=xds,
            pipeline=pipeline,
            source=source,
            status=status,
            status_writer=status_writer,
        )

    async def start(self) -> None:
        # Inspection (admin API, CSDS) is served on the xDS port, and also on
        # its own port when asked, reachable without reaching the Envoys' one.
        inspection = inspection_services(
            cache=self.cache, registry=self.xds.registry, conditions=self.status
        )
        tls = self.settings.xds_tls
        scheme = "mTLS" if tls is not None else "plaintext (--insecure)"
        self.server, self.port = await start_grpc_server(
            services=(self.xds, *inspection),
            address=str(self.settings.xds_address),
            ready=self.pipeline.first_published,
            # gRPC consumes a credentials object's first configuration:
            # each port gets its own (both reload the same files).
            credentials=server_credentials(tls) if tls is not None else None,
        )
        log.info(
            "xDS server listening on %s:%d, %s", self.settings.xds_address.host, self.port, scheme
        )
        if self.settings.admin_address is not None:
            self.admin_server, self.admin_port = await start_grpc_server(
                services=inspection,
                address=str(self.settings.admin_address),
                credentials=server_credentials(tls) if tls is not None else None,
            )
            log.info(
                "admin API listening on %s:%d, %s",
                self.settings.admin_address.host,
                self.admin_port,
                scheme,
            )
        if self.settings.health_address is not None:
            # Health alone, in plaintext: kubelet's gRPC probes cannot present
            # a client certificate, and health answers say nothing secret.
            self.health_server, self.health_port = await start_grpc_server(
                services=(),
                address=str(self.settings.health_address),
                ready=self.pipeline.first_published,
            )
            log.info(
                "gRPC health listening on %s:%d, plaintext",
                self.settings.health_address.host,
                self.health_port,
            )
        if self.settings.metrics_address is not None:
            self.metrics_server = start_metrics_server(
                metrics=self.xds.metrics,
                host=self.settings.metrics_address.host,
                port=self.settings.metrics_address.port,
            )
            follow_snapshots(cache=self.cache, metrics=self.xds.metrics)
            log.info(
                "metrics on http://%s:%d/metrics",
                self.settings.metrics_address.host,
                self.metrics_server.port,
            )
        self._tasks = (
            asyncio.create_task(self.source.run(self.store), name="source"),
            asyncio.create_task(self.pipeline.run(synced=self.source.synced), name="pipeline"),
        )
        if self.status_writer is not None:
            self._tasks += (asyncio.create_task(self.status_writer.run(), name="status-writer"),)
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
        if self.admin_server is not None:
            await self.admin_server.stop(grace=1.0)
        if self.health_server is not None:
            await self.health_server.stop(grace=1.0)
        if self.metrics_server is not None:
            await self.metrics_server.stop()


def _source(settings: ServeSettings, *, watch_observer: WatchObserver | None = None) -> Source:
    """The folder source, or the cluster's; raises KubeConfigError without a cluster."""
    if settings.source == KUBERNETES_SOURCE:
        from xds_ingress.sources.kube_client import load_configuration
        from xds_ingress.sources.kubernetes import KubernetesSource

        return KubernetesSource(
            configuration=load_configuration(kubeconfig=settings.kubeconfig),
            namespace=settings.watch_namespace,
            observer=watch_observer,
        )
    return FileSource(Path(settings.source), poll_interval=settings.poll_seconds)


def _status_writer(settings: ServeSettings, *, store: Store) -> KubeStatusWriter | None:
    if settings.source != KUBERNETES_SOURCE:
        return None
    from xds_ingress.sources.kube_client import load_configuration
    from xds_ingress.status.kube_writer import KubeStatusWriter, StatusSettings

    def lookup(ref: ir.ObjectRef) -> KubeObject | None:
        return store.view().get(ref.kind, ref.namespace, ref.name)

    return KubeStatusWriter(
        configuration=load_configuration(kubeconfig=settings.kubeconfig),
        settings=StatusSettings(
            publish_service=settings.publish_service,
            lease_namespace=settings.leader_election_namespace,
            # Unique per process: a restarted pod must not pass for its
            # previous self, which may still think it holds the Lease.
            identity=f"{socket.gethostname()}_{secrets.token_hex(4)}",
        ),
        lookup=lookup,
        routes=ChangedRoutes(store),
    )


class ChangedRoutes:
    """Every GRPCRoute and HTTPRoute the store holds, or none if none changed since the last call.

    The status writer looks through the routes after every build for status
    entries an earlier run left; a build that changed no route (an
    EndpointSlice, the common case) should not pay for sorting them all.
    What it found before stays with it, so answering nothing loses nothing.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._changed = True
        store.subscribe(self._noted)

    def _noted(self, change: Change) -> None:
        if not self._changed and not change.kinds.isdisjoint((GRPC_ROUTE, HTTP_ROUTE)):
            self._changed = True

    def __call__(self) -> tuple[KubeObject, ...]:
        if not self._changed:
            return ()
        self._changed = False
        view = self._store.view()
        return (*view.objects(GRPC_ROUTE), *view.objects(HTTP_ROUTE))


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


async def serve(settings: ServeSettings, *, source: Source | None = None) -> None:
    """Run until SIGINT or SIGTERM; `source` as ControlPlane.from_settings takes it."""
    control_plane = ControlPlane.from_settings(settings, source=source)
    await control_plane.start()
    try:
        await wait_for_signal()
    finally:
        log.info("stopping")
        await control_plane.stop()
