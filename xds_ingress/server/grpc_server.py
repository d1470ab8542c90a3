"""The gRPC servers: xDS, inspection (admin API, CSDS), health and reflection.

The xDS port serves everything; an optional admin port serves inspection
alone, so operators can reach it without reaching the port Envoys use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

import grpc
from grpc_health.v1 import _async as health_aio  # the asyncio HealthServicer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from xds_ingress.cache import SnapshotInspector
from xds_ingress.server.admin import AdminService
from xds_ingress.server.conditions import ConditionSource
from xds_ingress.server.csds import CsdsService
from xds_ingress.server.lookup import Lookup
from xds_ingress.server.redact import Redactor
from xds_ingress.server.registry import StreamRegistry

# Snapshots of thousands of services exceed gRPC's 4 MiB default; Envoy's
# own limit for xDS responses is set to match in the bootstrap.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Envoy pings idle xDS connections; allow it instead of answering GOAWAY.
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.so_reuseport", 0),
]

HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class GrpcService(Protocol):
    """Something that adds its handlers to a server and names the services it adds."""

    @property
    def service_names(self) -> tuple[str, ...]: ...

    def register(self, server: grpc.aio.Server) -> None: ...


def inspection_services(
    *,
    cache: SnapshotInspector,
    registry: StreamRegistry,
    conditions: ConditionSource | None = None,
) -> tuple[AdminService, CsdsService]:
    """The admin API and CSDS over one cache and one stream registry.

    `conditions` (the status stage) feeds ListConditions; without it the list is empty.
    """
    lookup = Lookup(cache=cache, registry=registry)
    redactor = Redactor()
    return AdminService(lookup=lookup, redactor=redactor, conditions=conditions), CsdsService(
        lookup=lookup, redactor=redactor
    )


READINESS_SERVICE = "xds-ingress.ready"
"""The health service name a readiness probe asks: SERVING once `ready` is set.

The server as a whole ("") is SERVING as soon as it runs, which is what a
liveness probe wants: a slow first sync must not get the process restarted.
"""


async def start_grpc_server(
    *,
    services: Sequence[GrpcService],
    address: str,
    ready: asyncio.Event | None = None,
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Serve `services` with health and reflection on `address` (HOST:PORT, port 0 picks one).

    Returns the server and the bound port. Reflection covers every file the
    process has imported (the default descriptor pool), so grpcurl can also
    print the Envoy resources inside a google.protobuf.Any. With `ready`,
    the xDS services and READINESS_SERVICE report NOT_SERVING until it is set.
    With `credentials` the port speaks TLS (server/credentials.py: mTLS);
    without, plaintext.
    """
    server = grpc.aio.server(options=_OPTIONS)
    names: list[str] = []
    for service in services:
        service.register(server)
        names += service.service_names
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    gated = (*names, READINESS_SERVICE) if ready is not None else ()
    for name in ("", *names):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    if ready is not None:
        for name in gated:
            await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        server_ready = ready

        async def serve_when_ready() -> None:
            await server_ready.wait()
            for name in gated:
                await health.set(name, health_pb2.HealthCheckResponse.SERVING)

        # Held by the server object so the task is not collected mid-wait.
        server.xds_ingress_readiness = asyncio.create_task(serve_when_ready())  # type: ignore[attr-defined]
    reflection.enable_server_reflection((*names, HEALTH_SERVICE, reflection.SERVICE_NAME), server)
    if credentials is not None:
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    return server, port
