"""Readiness waits for the first snapshot; liveness does not."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from xds_ingress.cache import SnapshotCache
from xds_ingress.server.grpc_server import READINESS_SERVICE, start_grpc_server
from xds_ingress.server.services import ADS_SERVICE, XdsServer

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_readiness_is_not_serving_until_the_first_snapshot_is_published() -> None:
    ready = asyncio.Event()
    server, port = await start_grpc_server(
        services=(XdsServer(cache=SnapshotCache()),), address="127.0.0.1:0", ready=ready
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def status(service: str) -> int:
                request = health_pb2.HealthCheckRequest(service=service)
                response = await health.Check(request, timeout=5)
                return int(response.status)

            assert await status("") == SERVING  # liveness
            assert await status(READINESS_SERVICE) == NOT_SERVING
            assert await status(ADS_SERVICE) == NOT_SERVING
            ready.set()
            for _ in range(50):
                if await status(READINESS_SERVICE) == SERVING:
                    break
                await asyncio.sleep(0.02)
            assert await status(READINESS_SERVICE) == SERVING
            assert await status(ADS_SERVICE) == SERVING
    finally:
        await server.stop(grace=None)
