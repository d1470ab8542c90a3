"""A demo gRPC backend: the Greeter service, gRPC health and server reflection.

`xds-ingress demo` runs two of these behind Envoy, and the tests start them
in-process. Every reply carries the backend's name, so a caller can tell which
"pod" a call reached. Reflection makes the server usable from grpcurl without
the .proto files; health lets Envoy (or a person) probe it.

For debugging, one can be run on its own:

    python -m xds_ingress.demo.backend --name a --port 50051
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Sequence
from typing import Final, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from xds_ingress.demo.v1 import greeter_pb2, greeter_pb2_grpc

log = logging.getLogger(__name__)

GREETER_SERVICE: Final = greeter_pb2.DESCRIPTOR.services_by_name["Greeter"].full_name
# A server-streaming caller chooses how many replies it gets; a bound keeps a
# typo from streaming forever.
MAX_STREAM_REPLIES: Final = 1000


class _AsyncHealth(Protocol):
    """The part of grpc_health's asyncio servicer we use (grpc-stubs does not describe it)."""

    async def set(self, service: str, status: int) -> None: ...

    async def enter_graceful_shutdown(self) -> None: ...


class Greeter:
    """Greets by name and signs every reply with this backend's name.

    Not a subclass of the generated GreeterServicer, which is untyped (Any to
    mypy) and only adds UNIMPLEMENTED defaults; every method is here.
    """

    def __init__(self, *, name: str) -> None:
        self._name = name

    def _reply(self, message: str) -> greeter_pb2.HelloReply:
        return greeter_pb2.HelloReply(message=message, backend=self._name)

    async def SayHello(
        self,
        request: greeter_pb2.HelloRequest,
        context: grpc.aio.ServicerContext[greeter_pb2.HelloRequest, greeter_pb2.HelloReply],
    ) -> greeter_pb2.HelloReply:
        return self._reply(f"Hello, {request.name}!")

    async def SayHelloClientStream(
        self,
        request_iterator: AsyncIterator[greeter_pb2.HelloRequest],
        context: grpc.aio.ServicerContext[greeter_pb2.HelloRequest, greeter_pb2.HelloReply],
    ) -> greeter_pb2.HelloReply:
        names = [request.name async for request in request_iterator]
        return self._reply(f"Hello, {', '.join(names)}!")

    async def SayHelloServerStream(
        self,
        request: greeter_pb2.HelloRequest,
        context: grpc.aio.ServicerContext[greeter_pb2.HelloRequest, greeter_pb2.HelloReply],
    ) -> AsyncIterator[greeter_pb2.HelloReply]:
        count = min(max(request.count, 1), MAX_STREAM_REPLIES)
        for index in range(count):
            yield self._reply(f"Hello, {request.name}! ({index + 1}/{count})")

    async def SayHelloBidi(
        self,
        request_iterator: AsyncIterator[greeter_pb2.HelloRequest],
        context: grpc.aio.ServicerContext[greeter_pb2.HelloRequest, greeter_pb2.HelloReply],
    ) -> AsyncIterator[greeter_pb2.HelloReply]:
        async for request in request_iterator:
            yield self._reply(f"Hello, {request.name}!")


class GreeterBackend:
    """One backend on one port: Greeter, grpc.health.v1 and reflection.

    `port=0` picks a free port; `port` holds the bound one after `start()`.
    """

    def __init__(self, *, name: str, address: str = "127.0.0.1", port: int = 0) -> None:
        self.name = name
        self.address = address
        self.port = port
        self._server: grpc.aio.Server | None = None
        self._health: _AsyncHealth | None = None

    @property
    def target(self) -> str:
        """host:port for a gRPC channel."""
        return _host_port(self.address, self.port)

    async def start(self) -> int:
        if self._server is not None:
            raise RuntimeError(f"backend {self.name!r} is already started")
        # gRPC sets SO_REUSEPORT by default, so two backends told the same port
        # would both bind and silently share its calls; a clash must fail.
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        greeter_pb2_grpc.add_GreeterServicer_to_server(Greeter(name=self.name), server)
        servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        health_servicer: _AsyncHealth = servicer
        reflection.enable_server_reflection(
            [GREETER_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        address = _host_port(self.address, self.port)
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as error:
            # grpc says only "Failed to bind"; name the backend and the address.
            raise OSError(f"backend {self.name!r} could not listen on {address}") from error
        serving = health_pb2.HealthCheckResponse.SERVING
        # Set before serving, so no probe ever sees the service as unknown.
        # "" is the whole server, which Envoy's gRPC health check asks by default.
        for service in ("", GREETER_SERVICE):
            await health_servicer.set(service, serving)
        await server.start()
        self.port = bound
        self._server = server
        self._health = health_servicer
        log.info("greeter backend %s listening on %s", self.name, self.target)
        return bound

    async def stop(self, *, grace: float | None = 1.0) -> None:
        """Report NOT_SERVING, then stop, letting calls in flight finish within `grace`."""
        server, self._server = self._server, None
        health_servicer, self._health = self._health, None
        if server is None:
            return
        if health_servicer is not None:
            await health_servicer.enter_graceful_shutdown()
        await server.stop(grace)

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def __aenter__(self) -> GreeterBackend:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def _host_port(address: str, port: int) -> str:
    # An IPv6 address needs brackets before the port.
    host = f"[{address}]" if ":" in address else address
    return f"{host}:{port}"


async def serve_backend(*, name: str, address: str = "127.0.0.1", port: int = 0) -> GreeterBackend:
    """Start a backend and return it; `backend.port` is the bound port."""
    backend = GreeterBackend(name=name, address=address, port=port)
    await backend.start()
    return backend


async def _serve_until_signalled(*, name: str, address: str, port: int) -> None:
    backend = await serve_backend(name=name, address=address, port=port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await backend.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xds_ingress.demo.backend",
        description="Run one demo Greeter backend (with gRPC health and reflection).",
    )
    parser.add_argument("--name", required=True, help="backend name put in every reply")
    parser.add_argument("--address", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.exit(2, f"{parser.prog}: error: --port: {args.port} is not a port\n")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_until_signalled(name=args.name, address=args.address, port=args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
