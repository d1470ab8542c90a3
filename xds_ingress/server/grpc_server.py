"""The gRPC server on the xDS port: xDS, health and reflection."""

from __future__ import annotations

import grpc
from grpc_health.v1 import _async as health_aio  # the asyncio HealthServicer
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from xds_ingress.server.services import XDS_SERVICE_NAMES, XdsServer

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


async def start_grpc_server(*, xds: XdsServer, address: str) -> tuple[grpc.aio.Server, int]:
    """Start serving on `address` (HOST:PORT, port 0 picks one); return the bound port."""
    server = grpc.aio.server(options=_OPTIONS)
    xds.register(server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for name in ("", *XDS_SERVICE_NAMES):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (
            *XDS_SERVICE_NAMES,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    return server, port
