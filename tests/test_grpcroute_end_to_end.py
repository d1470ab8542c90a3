"""A GRPCRoute on a Gateway, from the config folder to a real Envoy (delta xDS) and real calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from ingress_harness import GREETER_SAY_HELLO, NAMESPACE, Ingress, endpoint_slice, service
from peers import wait_until

from xds_ingress.demo.backend import GreeterBackend
from xds_ingress.demo.v1 import greeter_pb2, greeter_pb2_grpc

pytestmark = pytest.mark.timeout(120)

GROUP = "gateway.networking.k8s.io"
GREETER = GREETER_SAY_HELLO.split("/")[1]
HOST = "grpc.example.com"


def gateway() -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": NAMESPACE},
        "spec": {
            "gatewayClassName": "xds-ingress",
            "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP", "hostname": "*.example.com"}
            ],
        },
    }


def backend(name: str, weight: int = 1) -> dict[str, Any]:
    return {"name": f"greeter-{name}", "port": 50051, "weight": weight}


def grpc_route(*rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "GRPCRoute",
        "metadata": {"name": "greeter", "namespace": NAMESPACE},
        "spec": {
            "parentRefs": [{"name": "gw"}],
            "hostnames": [HOST],
            "rules": list(rules),
        },
    }


@pytest.fixture
async def ingress_under_test(tmp_path: Path) -> AsyncIterator[Ingress]:
    under_test = Ingress(workdir=tmp_path, delta=True)
    yield under_test
    await under_test.stop()


@pytest.fixture
async def backends() -> AsyncIterator[dict[str, GreeterBackend]]:
    started = {name: GreeterBackend(name=name) for name in ("a", "b", "c")}
    for started_backend in started.values():
        await started_backend.start()
    yield started
    for started_backend in started.values():
        await started_backend.stop(grace=None)


async def call(
    target: str, *, method: str = "SayHello", metadata: tuple[tuple[str, str], ...] = ()
) -> str | None:
    """The backend that answered, or None."""
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.default_authority", HOST)]
    ) as channel:
        stub = greeter_pb2_grpc.GreeterStub(channel)
        request = greeter_pb2.HelloRequest(name="test")
        try:
            if method == "SayHello":
                reply = await stub.SayHello(request, timeout=2.0, metadata=metadata)
            else:
                replies = [
                    r
                    async for r in stub.SayHelloServerStream(
                        request, timeout=2.0, metadata=metadata
                    )
                ]
                reply = replies[-1]
        except grpc.aio.AioRpcError:
            return None
    return str(reply.backend)


async def routes_to(under_test: Ingress, expected: str, **kw: Any) -> None:
    async def check() -> bool:
        return await call(under_test.target, **kw) == expected

    try:
        await wait_until(check, timeout=15, interval=0.1, message=f"{kw} → {expected}")
    except TimeoutError as error:
        raise AssertionError(f"{error}\nenvoy log tail:\n{under_test.envoy_log()}") from None


async def test_grpcroute_routes_by_method_header_and_weight(
    ingress_under_test: Ingress, backends: dict[str, GreeterBackend]
) -> None:
    config = ingress_under_test.config
    config.write(
        "services.yaml",
        *(service(f"greeter-{name}") for name in ("a", "b", "c")),
        *(endpoint_slice(f"greeter-{name}", backends[name].port) for name in ("a", "b", "c")),
    )
    config.write(
        "gateway.yaml",
        gateway(),
        grpc_route(
            {
                "matches": [{"method": {"service": GREETER, "method": "SayHello"}}],
                "backendRefs": [backend("b")],
            },
            {
                "matches": [
                    {
                        "method": {"service": GREETER},
                        "headers": [{"name": "x-canary", "value": "yes"}],
                    }
                ],
                "backendRefs": [backend("c")],
            },
            {"matches": [{"method": {"service": GREETER}}], "backendRefs": [backend("a")]},
        ),
    )
    await ingress_under_test.start_control_plane()
    envoy = await ingress_under_test.start_envoy()
    await envoy.wait_live()

    # The exact method goes to b, the rest of the service to a.
    await routes_to(ingress_under_test, "b")
    await routes_to(ingress_under_test, "a", method="SayHelloServerStream")
    # More header matches come first, but the exact method still wins.
    await routes_to(
        ingress_under_test, "c", method="SayHelloServerStream", metadata=(("x-canary", "yes"),)
    )
    await routes_to(ingress_under_test, "b", metadata=(("x-canary", "yes"),))

    # A 50/50 split: within a bounded number of calls both backends answer.
    config.write(
        "gateway.yaml",
        gateway(),
        grpc_route({"backendRefs": [backend("a", 50), backend("b", 50)]}),
    )
    # SayHello went only to b before the change: an a means the split is in.
    await routes_to(ingress_under_test, "a")
    seen = {await call(ingress_under_test.target) for _ in range(60)}
    # P(one backend never seen in 60 fair draws) = 2 * 2**-60.
    assert seen == {"a", "b"}, ingress_under_test.envoy_log()
