"""The xDS gRPC services on a grpc.aio server.

Handlers are registered generically rather than through the generated
servicer classes so responses can be written as pre-serialised bytes (the
response serializer is the identity): see `cache` and `sotw.SharedResponses`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2

from xds_ingress.cache import SnapshotWatcher
from xds_ingress.resources import types
from xds_ingress.server.delta import DeltaStream
from xds_ingress.server.metrics import XdsMetrics
from xds_ingress.server.observer import NullObserver, XdsObserver
from xds_ingress.server.registry import StreamKind, StreamRegistry
from xds_ingress.server.sotw import SharedResponses, SotwStream
from xds_ingress.server.stream import StreamContext, XdsStream
from xds_ingress.server.warming import DEFAULT_BOUND_SECONDS

log = logging.getLogger(__name__)

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"


@dataclass(frozen=True)
class PerTypeService:
    """A non-aggregated discovery service: one xDS type per stream."""

    name: str
    sotw_method: str
    delta_method: str
    type_url: str


PER_TYPE_SERVICES = (
    PerTypeService(
        "envoy.service.listener.v3.ListenerDiscoveryService",
        "StreamListeners",
        "DeltaListeners",
        types.LISTENER,
    ),
    PerTypeService(
        "envoy.service.route.v3.RouteDiscoveryService", "StreamRoutes", "DeltaRoutes", types.ROUTE
    ),
    PerTypeService(
        "envoy.service.cluster.v3.ClusterDiscoveryService",
        "StreamClusters",
        "DeltaClusters",
        types.CLUSTER,
    ),
    PerTypeService(
        "envoy.service.endpoint.v3.EndpointDiscoveryService",
        "StreamEndpoints",
        "DeltaEndpoints",
        types.ENDPOINT,
    ),
    PerTypeService(
        "envoy.service.secret.v3.SecretDiscoveryService",
        "StreamSecrets",
        "DeltaSecrets",
        types.SECRET,
    ),
)

XDS_SERVICE_NAMES = (ADS_SERVICE, *(service.name for service in PER_TYPE_SERVICES))

StreamHandler = Callable[
    [AsyncIterator[Any], grpc.aio.ServicerContext[Any, Any]], AsyncIterator[bytes]
]


class XdsServer:
    """Owns the xDS handlers; add them to any grpc.aio server with `register`."""

    service_names = XDS_SERVICE_NAMES

    def __init__(
        self,
        *,
        cache: SnapshotWatcher,
        metrics: XdsMetrics | None = None,
        registry: StreamRegistry | None = None,
        control_plane_id: str = "xds-ingress",
        observer: XdsObserver | None = None,
        warming_bound_seconds: float = DEFAULT_BOUND_SECONDS,
    ) -> None:
        self.metrics = metrics if metrics is not None else XdsMetrics()
        self.registry = registry if registry is not None else StreamRegistry()
        self._observer = observer if observer is not None else NullObserver()
        self._context = StreamContext(
            cache=cache,
            metrics=self.metrics,
            control_plane_id=control_plane_id,
            observer=self._observer,
            warming_bound_seconds=warming_bound_seconds,
        )
        self.shared_responses = SharedResponses(control_plane_id=control_plane_id)

    def _handler(self, kind: StreamKind, fixed_type: str | None) -> StreamHandler:
        async def handle(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[bytes]:
            status = self.registry.open(kind=kind, peer=context.peer())
            stream: XdsStream[Any]
            if kind is StreamKind.SOTW:
                stream = SotwStream(
                    context=self._context,
                    status=status,
                    fixed_type=fixed_type,
                    shared=self.shared_responses,
                )
            else:
                stream = DeltaStream(context=self._context, status=status, fixed_type=fixed_type)
            self.metrics.streams.labels(kind).inc()
            try:
                async for response in stream.run(requests):
                    yield response
            finally:
                self.metrics.streams.labels(kind).dec()
                self.registry.close(status)
                self._observer.stream_closed(stream_id=status.stream_id)
                log.info(
                    "envoy %r (group %r) disconnected (%s)",
                    status.node_id,
                    status.node_cluster,
                    kind,
                )

        return handle

    def _method(
        self, kind: StreamKind, fixed_type: str | None
    ) -> grpc.RpcMethodHandler[Any, bytes]:
        request_type = (
            discovery_pb2.DiscoveryRequest
            if kind is StreamKind.SOTW
            else discovery_pb2.DeltaDiscoveryRequest
        )
        return grpc.stream_stream_rpc_method_handler(
            self._handler(kind, fixed_type),
            request_deserializer=request_type.FromString,
            response_serializer=None,  # responses are already bytes
        )

    def generic_handlers(self) -> list[grpc.GenericRpcHandler[Any, bytes]]:
        handlers = [
            grpc.method_handlers_generic_handler(
                ADS_SERVICE,
                {
                    "StreamAggregatedResources": self._method(StreamKind.SOTW, None),
                    "DeltaAggregatedResources": self._method(StreamKind.DELTA, None),
                },
            )
        ]
        handlers += [
            grpc.method_handlers_generic_handler(
                service.name,
                {
                    service.sotw_method: self._method(StreamKind.SOTW, service.type_url),
                    service.delta_method: self._method(StreamKind.DELTA, service.type_url),
                },
            )
            for service in PER_TYPE_SERVICES
        ]
        return handlers

    def register(self, server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers(self.generic_handlers())
