"""gRPC production defaults with a real Envoy (delta xDS) and real grpcio peers.

Every call shape through both listeners; a call the backend refuses with
UNAVAILABLE is retried; a terminating endpoint is drained, not dropped; bad
annotations are reported while traffic flows; ingress-nginx's backend-protocol
makes a plain Service port speak h2c (and GRPCS, h2 over TLS).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from ingress_harness import (
    NAMESPACE,
    Ingress,
    TlsClient,
    ingress,
    routes_to,
    routes_to_tls,
    rule,
    say_hello,
    service,
)
from peers import CALL_SHAPES, CallShape, greet, wait_until
from tls_certs import CertificateAuthority, Issued, tls_secret

from xds_ingress.demo.backend import GREETER_SERVICE, Greeter, GreeterBackend
from xds_ingress.demo.v1 import greeter_pb2, greeter_pb2_grpc

pytestmark = pytest.mark.timeout(120)

GrpcContext = grpc.aio.ServicerContext[greeter_pb2.HelloRequest, greeter_pb2.HelloReply]


@pytest.fixture
async def ingress_under_test(tmp_path: Path) -> AsyncIterator[Ingress]:
    under_test = Ingress(workdir=tmp_path, delta=True)
    yield under_test
    await under_test.stop()


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority()


async def start(under_test: Ingress) -> None:
    await under_test.start_control_plane()
    envoy = await under_test.start_envoy()
    await envoy.wait_live()


def slice_of(
    service_name: str, port: int, *, port_name: str = "grpc", **conditions: bool
) -> dict[str, Any]:
    """One endpoint on 127.0.0.1:`port`, with the given EndpointSlice conditions."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service_name}-{port}",
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": port}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": conditions or {"ready": True}}],
    }


def annotated(body: dict[str, Any], annotations: Mapping[str, str]) -> dict[str, Any]:
    body["metadata"]["annotations"] = dict(annotations)
    return body


class Servers:
    """grpcio servers with test servicers, stopped at teardown."""

    def __init__(self) -> None:
        self.servers: list[grpc.aio.Server] = []

    async def start(
        self, servicer: object, *, credentials: grpc.ServerCredentials | None = None
    ) -> int:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        greeter_pb2_grpc.add_GreeterServicer_to_server(servicer, server)
        if credentials is None:
            port = server.add_insecure_port("127.0.0.1:0")
        else:
            port = server.add_secure_port("127.0.0.1:0", credentials)
        await server.start()
        self.servers.append(server)
        return port


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    started = Servers()
    yield started
    for server in started.servers:
        await server.stop(grace=None)


# ---------------------------------------------------------------- call shapes


async def greet_tls(
    under_test: Ingress, client: TlsClient, *, shape: CallShape, names: Sequence[str]
) -> tuple[list[str], grpc.StatusCode]:
    """One call of `shape` over TLS with SNI; (backends of every reply, status)."""
    credentials = grpc.ssl_channel_credentials(root_certificates=client.ca_pem)
    options = [
        ("grpc.ssl_target_name_override", client.server_name),
        ("grpc.default_authority", client.server_name),
        ("grpc.enable_retries", 0),
    ]
    requests = [greeter_pb2.HelloRequest(name=name) for name in names]
    seen: list[str] = []
    target = f"127.0.0.1:{under_test.https_port}"
    async with grpc.aio.secure_channel(target, credentials, options=options) as channel:
        stub = greeter_pb2_grpc.GreeterStub(channel)
        try:
            if shape == "unary":
                seen.append((await stub.SayHello(requests[0], timeout=5)).backend)
            elif shape == "client_stream":
                seen.append((await stub.SayHelloClientStream(iter(requests), timeout=5)).backend)
            elif shape == "server_stream":
                request = greeter_pb2.HelloRequest(name=names[0], count=len(names))
                seen += [r.backend async for r in stub.SayHelloServerStream(request, timeout=5)]
            else:
                seen += [r.backend async for r in stub.SayHelloBidi(iter(requests), timeout=5)]
        except grpc.aio.AioRpcError as error:
            return seen, error.code()
    return seen, grpc.StatusCode.OK


async def test_every_call_shape_through_the_plain_and_the_tls_listener(
    ingress_under_test: Ingress, ca: CertificateAuthority
) -> None:
    issued = ca.issue("grpc.example.com")
    async with GreeterBackend(name="a") as backend:
        ingress_under_test.config.write(
            "site.yaml",
            service("greeter-a"),
            slice_of("greeter-a", backend.port),
            tls_secret("site", issued, namespace=NAMESPACE),
        )
        site = ingress("site", [rule("grpc.example.com", ("/", "Prefix", "greeter-a"))])
        site["spec"]["tls"] = [{"hosts": ["grpc.example.com"], "secretName": "site"}]
        ingress_under_test.config.write("ingress.yaml", site)
        await start(ingress_under_test)
        client = TlsClient(ca_pem=ca.pem, server_name="grpc.example.com")
        await routes_to(ingress_under_test, "grpc.example.com", "a")
        await routes_to_tls(ingress_under_test, client, "a")
        names = ("ann", "bob", "cy")
        for shape in CALL_SHAPES:
            call = await greet(
                ingress_under_test.target, shape=shape, authority="grpc.example.com", names=names
            )
            assert call.code is grpc.StatusCode.OK, (shape, call)
            expected = 1 if shape in ("unary", "client_stream") else len(names)
            assert call.backends == ("a",) * expected, shape
            seen, code = await greet_tls(ingress_under_test, client, shape=shape, names=names)
            assert code is grpc.StatusCode.OK, shape
            assert seen == ["a"] * expected, shape


# ---------------------------------------------------------------- retries


class FlakyGreeter(Greeter):
    """Answers UNAVAILABLE to the first call for each name, as a pod shutting down might."""

    def __init__(self) -> None:
        super().__init__(name="flaky")
        self.attempts: Counter[str] = Counter()

    async def SayHello(
        self, request: greeter_pb2.HelloRequest, context: GrpcContext
    ) -> greeter_pb2.HelloReply:
        self.attempts[request.name] += 1
        if self.attempts[request.name] == 1:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "not yet")
        return await super().SayHello(request, context)


async def call_once(target: str, authority: str, name: str) -> grpc.StatusCode:
    call = await greet(target, authority=authority, names=(name,))
    return call.code


async def test_a_call_answered_unavailable_is_retried_unless_retries_are_off(
    ingress_under_test: Ingress, servers: Servers
) -> None:
    flaky = FlakyGreeter()
    port = await servers.start(flaky)
    ingress_under_test.config.write(
        "site.yaml",
        service("flaky"),
        slice_of("flaky", port),
        ingress("retried", [rule("retried.example.com", ("/", "Prefix", "flaky"))]),
        annotated(
            ingress("once", [rule("once.example.com", ("/", "Prefix", "flaky"))]),
            {"xds-ingress.io/retries": "0"},
        ),
        # One host, two routes: the Greeter's retries nothing, the rest retries.
        ingress("mixed", [rule("mixed.example.com", ("/", "Prefix", "flaky"))]),
        annotated(
            ingress(
                "mixed-once",
                [rule("mixed.example.com", (f"/{GREETER_SERVICE}", "Prefix", "flaky"))],
            ),
            {"xds-ingress.io/retries": "0"},
        ),
    )
    await start(ingress_under_test)
    target = ingress_under_test.target

    async def routed(authority: str) -> bool:
        # A fresh name per probe succeeds only through a retry or a second call.
        probe = f"probe-{authority}-{sum(flaky.attempts.values())}"
        return await call_once(target, authority, probe) is grpc.StatusCode.OK or (
            await call_once(target, authority, probe) is grpc.StatusCode.OK
        )

    await wait_until(lambda: routed("retried.example.com"), timeout=15, message="routed")
    await wait_until(lambda: routed("once.example.com"), timeout=15, message="routed")
    await wait_until(lambda: routed("mixed.example.com"), timeout=15, message="routed")

    assert await call_once(target, "retried.example.com", "retry-me") is grpc.StatusCode.OK
    assert flaky.attempts["retry-me"] == 2
    # xds-ingress.io/retries: "0" hands the client the backend's answer.
    assert await call_once(target, "once.example.com", "only-once") is grpc.StatusCode.UNAVAILABLE
    assert flaky.attempts["only-once"] == 1
    # ...also beside a route of the same host that retries: it does not
    # inherit that route's policy (a host-wide one would be).
    assert await call_once(target, "mixed.example.com", "mixed") is grpc.StatusCode.UNAVAILABLE
    assert flaky.attempts["mixed"] == 1


# ---------------------------------------------------------------- draining


class SlowGreeter(Greeter):
    """Streams its replies slowly, so a stream is still in flight while the slice changes."""

    async def SayHelloServerStream(
        self, request: greeter_pb2.HelloRequest, context: GrpcContext
    ) -> AsyncIterator[greeter_pb2.HelloReply]:
        async for reply in super().SayHelloServerStream(request, context):
            yield reply
            await asyncio.sleep(0.1)


def eds_health(under_test: Ingress, cluster: str) -> dict[int, str]:
    """Port → the EDS health status Envoy holds for each host of `cluster`."""
    assert under_test.envoy is not None
    document = json.loads(under_test.envoy.admin_get("/clusters?format=json"))
    for status in document.get("cluster_statuses", []):
        if status["name"] == cluster:
            return {
                host["address"]["socket_address"]["port_value"]: host.get("health_status", {}).get(
                    "eds_health_status", ""
                )
                for host in status.get("host_statuses", [])
            }
    return {}


async def test_a_terminating_endpoint_finishes_its_calls_and_gets_no_new_ones(
    ingress_under_test: Ingress, servers: Servers
) -> None:
    old = await servers.start(SlowGreeter(name="old"))
    new = await servers.start(SlowGreeter(name="new"))
    site = ingress("site", [rule("roll.example.com", ("/", "Prefix", "greeter"))])
    ingress_under_test.config.write("ingress.yaml", site)
    ingress_under_test.config.write("svc.yaml", service("greeter"), slice_of("greeter", old))
    await start(ingress_under_test)
    await routes_to(ingress_under_test, "roll.example.com", "old")

    # A long stream to the old pod: 30 replies, 0.1 s apart.
    stream = asyncio.create_task(
        greet(
            ingress_under_test.target,
            shape="server_stream",
            authority="roll.example.com",
            names=["x"] * 30,
            timeout=20,
        )
    )
    await asyncio.sleep(0.3)
    assert not stream.done()
    # The rollout: the old pod terminates (still serving), the new one is ready.
    ingress_under_test.config.write(
        "svc.yaml",
        service("greeter"),
        slice_of("greeter", old, ready=False, serving=True, terminating=True),
        slice_of("greeter", new),
    )
    await wait_until(
        lambda: (
            eds_health(ingress_under_test, "demo/greeter:50051")
            == {old: "DRAINING", new: "HEALTHY"}
        ),
        timeout=15,
        message="Envoy drains the old endpoint",
    )
    assert not stream.done(), "the stream should still be in flight"
    answered: Counter[tuple[str | None, grpc.StatusCode]] = Counter()
    for _ in range(20):
        result = await say_hello(ingress_under_test.target, authority="roll.example.com")
        answered[(result.backend, result.code)] += 1
    assert answered == {("new", grpc.StatusCode.OK): 20}
    call = await stream
    assert call.code is grpc.StatusCode.OK, call
    assert call.backends == ("old",) * 30


# ---------------------------------------------------------------- annotations


async def test_an_invalid_annotation_is_reported_and_traffic_flows_with_the_default(
    ingress_under_test: Ingress,
) -> None:
    async with GreeterBackend(name="a") as backend:
        ingress_under_test.config.write(
            "site.yaml",
            service("greeter-a"),
            slice_of("greeter-a", backend.port),
            annotated(
                ingress("site", [rule("a.example.com", ("/", "Prefix", "greeter-a"))]),
                {"xds-ingress.io/retry-on": "unavailable,teapot"},
            ),
        )
        control_plane = await ingress_under_test.start_control_plane()
        await (await ingress_under_test.start_envoy()).wait_live()
        await routes_to(ingress_under_test, "a.example.com", "a")
        (condition,) = [
            c for c in control_plane.pipeline.report.conditions if c.object.name == "site"
        ]
        assert (condition.type, condition.status.value, condition.reason) == (
            "Accepted",
            "False",
            "InvalidAnnotation",
        )
        assert "xds-ingress.io/retry-on" in condition.message
        assert "teapot" in condition.message


async def test_nginx_backend_protocol_makes_a_plain_port_speak_grpc(
    ingress_under_test: Ingress, servers: Servers, ca: CertificateAuthority
) -> None:
    plain_port = await servers.start(Greeter(name="h2c"))
    issued: Issued = ca.issue("tls-greeter.demo.svc")
    credentials = grpc.ssl_server_credentials([(issued.key_pem.encode(), issued.cert_pem.encode())])
    tls_port = await servers.start(Greeter(name="h2"), credentials=credentials)

    def plain_service(name: str) -> dict[str, Any]:
        body = service(name)
        # No appProtocol, a port name that says nothing: HTTP/1.1 by default.
        body["spec"]["ports"] = [{"name": "web", "port": 80}]
        return body

    def to_port_80(host: str, target: str) -> dict[str, Any]:
        backend = {"service": {"name": target, "port": {"number": 80}}}
        path = {"path": "/", "pathType": "Prefix", "backend": backend}
        return {"host": host, "http": {"paths": [path]}}

    backend_protocol = "nginx.ingress.kubernetes.io/backend-protocol"
    ingress_under_test.config.write(
        "site.yaml",
        plain_service("web-greeter"),
        plain_service("tls-greeter"),
        slice_of("web-greeter", plain_port, port_name="web"),
        slice_of("tls-greeter", tls_port, port_name="web"),
        annotated(
            ingress("grpc", [to_port_80("grpc.example.com", "web-greeter")]),
            {backend_protocol: "GRPC"},
        ),
        annotated(
            ingress("grpcs", [to_port_80("grpcs.example.com", "tls-greeter")]),
            {backend_protocol: "GRPCS"},
        ),
        ingress("http1", [to_port_80("http1.example.com", "web-greeter")]),
    )
    await start(ingress_under_test)
    await routes_to(ingress_under_test, "grpc.example.com", "h2c")
    await routes_to(ingress_under_test, "grpcs.example.com", "h2")
    # Without the annotation the same port is spoken to in HTTP/1.1, which a
    # gRPC server cannot answer.
    result = await say_hello(ingress_under_test.target, authority="http1.example.com")
    assert result.backend is None and result.code is not grpc.StatusCode.OK, result
