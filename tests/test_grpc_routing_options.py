"""Per-Ingress load balancing and gRPC-only routes, with a real Envoy and real peers.

Ring hash on a header sends every call with one header value to one backend
and spreads different values; least request is what Envoy runs (config
dump) and routes. A route that serves gRPC only answers a plain HTTP/1.1
request 415 with a body that says why, while gRPC and gRPC-Web calls pass.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import struct
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from ingress_harness import GREETER_SAY_HELLO, Ingress, ingress, routes_to, rule, service
from test_grpc_end_to_end import annotated, slice_of, start

from xds_ingress.demo.backend import GreeterBackend
from xds_ingress.demo.v1 import greeter_pb2, greeter_pb2_grpc

pytestmark = pytest.mark.timeout(120)

LOAD_BALANCER = "xds-ingress.io/load-balancer"
HASH_HEADER = "xds-ingress.io/hash-header"
BACKEND_PROTOCOL = "nginx.ingress.kubernetes.io/backend-protocol"
CALLS = 60


@pytest.fixture
async def ingress_under_test(tmp_path: Path) -> AsyncIterator[Ingress]:
    under_test = Ingress(workdir=tmp_path, delta=True)
    yield under_test
    await under_test.stop()


async def backends_answering(
    under_test: Ingress, authority: str, metadata: list[tuple[str, str]]
) -> Counter[str]:
    """Which backend answered each of CALLS unary calls, on one connection."""
    seen: Counter[str] = Counter()
    options = [("grpc.default_authority", authority), ("grpc.enable_retries", 0)]
    async with grpc.aio.insecure_channel(under_test.target, options=options) as channel:
        stub = greeter_pb2_grpc.GreeterStub(channel)
        for _ in range(CALLS):
            reply = await stub.SayHello(
                greeter_pb2.HelloRequest(name="lb"), metadata=metadata, timeout=3
            )
            seen[reply.backend] += 1
    return seen


def cluster_lb_policies(under_test: Ingress) -> dict[str, str]:
    assert under_test.envoy is not None
    dump = json.loads(under_test.envoy.admin_get("/config_dump?resource=dynamic_active_clusters"))
    return {
        entry["cluster"]["name"]: entry["cluster"].get("lb_policy", "ROUND_ROBIN")
        for entry in dump["configs"]
    }


async def test_ring_hash_keeps_a_header_value_on_one_backend_and_least_request_routes(
    ingress_under_test: Ingress, backends: dict[str, GreeterBackend]
) -> None:
    ingress_under_test.config.write(
        "site.yaml",
        service("greeter"),
        *(slice_of("greeter", backends[name].port) for name in ("a", "b", "c")),
        annotated(
            ingress("hashed", [rule("hashed.example.com", ("/", "Prefix", "greeter"))]),
            {LOAD_BALANCER: "ring-hash", HASH_HEADER: "x-user"},
        ),
        annotated(
            ingress("least", [rule("least.example.com", ("/", "Prefix", "greeter"))]),
            {LOAD_BALANCER: "least-request"},
        ),
        ingress("plain", [rule("plain.example.com", ("/", "Prefix", "greeter"))]),
    )
    await start(ingress_under_test)
    for host in ("hashed.example.com", "least.example.com", "plain.example.com"):
        await asyncio.wait_for(_served(ingress_under_test, host), timeout=15)
    assert cluster_lb_policies(ingress_under_test) == {
        "demo/greeter:50051": "ROUND_ROBIN",
        "demo/greeter:50051/ring-hash": "RING_HASH",
        "demo/greeter:50051/least-request": "LEAST_REQUEST",
    }
    # One user, one backend, call after call.
    for user in ("alice", "bob"):
        seen = await backends_answering(
            ingress_under_test, "hashed.example.com", [("x-user", user)]
        )
        assert len(seen) == 1 and sum(seen.values()) == CALLS, (user, seen)
    # Many users spread over the backends.
    owners: set[str] = set()
    for index in range(20):
        seen = await backends_answering(
            ingress_under_test, "hashed.example.com", [("x-user", f"user-{index}")]
        )
        assert len(seen) == 1, seen
        owners.update(seen)
    assert len(owners) >= 2, owners
    # Without hashing, the same calls go everywhere.
    for host in ("least.example.com", "plain.example.com"):
        seen = await backends_answering(ingress_under_test, host, [("x-user", "alice")])
        assert set(seen) == {"a", "b", "c"}, (host, seen)


async def _served(under_test: Ingress, host: str) -> None:
    while True:
        options = [("grpc.default_authority", host), ("grpc.enable_retries", 0)]
        async with grpc.aio.insecure_channel(under_test.target, options=options) as channel:
            try:
                await greeter_pb2_grpc.GreeterStub(channel).SayHello(
                    greeter_pb2.HelloRequest(name="probe"), timeout=2
                )
                return
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)


def http1(
    port: int,
    *,
    host: str,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on its own connection: (status, headers, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path, body=body, headers={"Host": host, **(headers or {})})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def grpc_web_say_hello(port: int, *, host: str) -> tuple[int, bytes]:
    message = greeter_pb2.HelloRequest(name="browser").SerializeToString()
    status, _, body = http1(
        port,
        host=host,
        path=GREETER_SAY_HELLO,
        method="POST",
        headers={"content-type": "application/grpc-web+proto", "x-grpc-web": "1"},
        body=struct.pack(">BI", 0, len(message)) + message,
    )
    return status, body


async def test_plain_http_on_a_grpc_only_route_gets_415_and_grpc_passes(
    ingress_under_test: Ingress, backends: dict[str, GreeterBackend]
) -> None:
    def to_greeter(host: str, path: str, path_type: str = "Prefix") -> dict[str, Any]:
        return rule(host, (path, path_type, "greeter"))

    ingress_under_test.config.write(
        "site.yaml",
        service("greeter"),
        slice_of("greeter", backends["a"].port),
        # A path naming a gRPC service: that service's calls only.
        ingress("by-path", [to_greeter("path.example.com", "/xds_ingress.demo.v1.Greeter")]),
        # ingress-nginx's GRPC: the whole host speaks gRPC.
        annotated(
            ingress("by-protocol", [to_greeter("nginx.example.com", "/")]),
            {BACKEND_PROTOCOL: "GRPC"},
        ),
        # Neither: HTTP is forwarded as before (and the gRPC server refuses it).
        ingress("open", [to_greeter("open.example.com", "/")]),
    )
    await start(ingress_under_test)
    for host in ("path.example.com", "nginx.example.com", "open.example.com"):
        await routes_to(ingress_under_test, host, "a")
    port = ingress_under_test.http_port
    for host in ("path.example.com", "nginx.example.com"):
        status, _, body = await asyncio.to_thread(http1, port, host=host, path=GREETER_SAY_HELLO)
        assert status == 415, (host, status, body)
        assert b"gRPC only" in body, body
        # curl's POST of a form is no gRPC call either.
        status, _, _ = await asyncio.to_thread(
            http1,
            port,
            host=host,
            path=GREETER_SAY_HELLO,
            method="POST",
            headers={"content-type": "application/x-www-form-urlencoded"},
            body=b"a=b",
        )
        assert status == 415, host
        # gRPC-Web (a browser) passes, translated to gRPC on the way.
        status, body = await asyncio.to_thread(grpc_web_say_hello, port, host=host)
        assert status == 200, (host, body)
        assert b"grpc-status:0" in body, body
    # Not gRPC-only: the request reaches the backend, whose gRPC server
    # answers it in its own way (not 415 from Envoy).
    status, _, body = await asyncio.to_thread(
        http1, port, host="open.example.com", path=GREETER_SAY_HELLO
    )
    assert status != 415 and b"gRPC only" not in body, (status, body)


async def test_grpc_stats_are_per_cluster_and_invented_method_names_add_none(
    ingress_under_test: Ingress, backends: dict[str, GreeterBackend]
) -> None:
    ingress_under_test.config.write(
        "site.yaml",
        service("greeter"),
        slice_of("greeter", backends["a"].port),
        ingress("site", [rule("stats.example.com", ("/", "Prefix", "greeter"))]),
    )
    await start(ingress_under_test)
    await routes_to(ingress_under_test, "stats.example.com", "a")
    options = [("grpc.default_authority", "stats.example.com"), ("grpc.enable_retries", 0)]
    async with grpc.aio.insecure_channel(ingress_under_test.target, options=options) as channel:
        # Method names a client made up: the backend answers UNIMPLEMENTED.
        for index in range(20):
            invented = channel.unary_unary(
                f"/made.Up{index}/Method{index}",
                request_serializer=None,
                response_deserializer=None,
            )
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await invented(b"", timeout=3)
            assert raised.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert ingress_under_test.envoy is not None
    document = json.loads(ingress_under_test.envoy.admin_get("/stats?format=json&filter=grpc"))
    names = {stat["name"]: stat.get("value") for stat in document["stats"] if "name" in stat}
    assert not [name for name in names if "made" in name.lower()], names
    totals = [value for name, value in names.items() if name.endswith(".grpc.total")]
    assert totals and max(totals) >= 20, names
