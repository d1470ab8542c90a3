"""Gateway API with a real Envoy: HTTPRoutes over HTTP/1.1 and h2c, HTTPS Gateway listeners.

Objects go in through the config folder, Envoy is configured over ADS (delta
and state of the world), and every check is a request a user would make.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import h2.config
import h2.connection
import h2.events
import pytest
from aiohttp import web
from h2_probe import Request, requests_on_one_connection
from ingress_harness import (
    NAMESPACE,
    Ingress,
    TlsClient,
    endpoint_slice,
    ingress,
    routes_to,
    routes_to_tls,
    rule,
    say_hello,
    say_hello_tls,
    service,
)
from peers import LOOPBACK, wait_until
from tls_certs import CertificateAuthority, tls_secret

from xds_ingress.demo.backend import GreeterBackend

pytestmark = pytest.mark.timeout(120)

GROUP = "gateway.networking.k8s.io"
WEB_HOST = "web.example.com"
SECURE_HOST = "secure.example.com"
PLAIN_HOST = "plain.example.com"
GREETER = "/xds_ingress.demo.v1.Greeter"


# --- a tiny HTTP/1.1 backend ----------------------------------------------------


class WebBackend:
    """Answers every request with its name and the path it was sent."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, 0)
        await site.start()
        address = self._runner.addresses[0]
        self.port = int(address[1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.Response:
        return web.Response(text=f"{self.name} {request.method} {request.path}")


@pytest.fixture
async def web_backends() -> AsyncIterator[dict[str, WebBackend]]:
    started = {name: WebBackend(name) for name in ("web-a", "web-b")}
    for backend in started.values():
        await backend.start()
    yield started
    for backend in started.values():
        await backend.stop()


def http_service(name: str) -> dict[str, Any]:
    """A Service whose port says nothing of HTTP/2: Envoy speaks HTTP/1.1 to it."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"ports": [{"name": "http", "port": 80}]},
    }


def http_slice(name: str, port: int) -> dict[str, Any]:
    body = endpoint_slice(name, port)
    body["ports"] = [{"name": "http", "port": port}]
    return body


# --- clients --------------------------------------------------------------------


async def get_http1(port: int, host: str, path: str) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=2)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"http://{LOOPBACK}:{port}{path}", headers={"Host": host}) as response,
    ):
        return response.status, await response.text()


def _get_h2c(port: int, authority: str, path: str) -> tuple[int, str]:
    """One GET over cleartext HTTP/2 with prior knowledge (blocking)."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    with socket.create_connection((LOOPBACK, port), timeout=2) as sock:
        connection.initiate_connection()
        stream = connection.get_next_available_stream_id()
        connection.send_headers(
            stream,
            [(":method", "GET"), (":scheme", "http"), (":authority", authority), (":path", path)],
            end_stream=True,
        )
        sock.sendall(connection.data_to_send())
        status, body = 0, b""
        for _ in range(100):  # bounded: a few frames make one small answer
            data = sock.recv(65536)
            if not data:
                break
            ended = False
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                    headers = {bytes(k): bytes(v) for k, v in event.headers or ()}
                    status = int(headers[b":status"])
                elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream:
                    body += event.data
                    connection.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                    ended = True
            sock.sendall(connection.data_to_send())
            if ended:
                break
    return status, body.decode()


async def get_h2c(port: int, authority: str, path: str) -> tuple[int, str]:
    return await asyncio.to_thread(_get_h2c, port, authority, path)


async def eventually(under_test: Ingress, check: Any, message: str) -> None:
    try:
        await wait_until(check, timeout=15, interval=0.1, message=message)
    except TimeoutError as error:
        raise AssertionError(f"{error}\nenvoy log tail:\n{under_test.envoy_log()}") from None


# --- objects --------------------------------------------------------------------


def gateway(*listeners: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": NAMESPACE},
        "spec": {"gatewayClassName": "xds-ingress", "listeners": list(listeners)},
    }


def http_listener(hostname: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "http", "port": 80, "protocol": "HTTP"}
    if hostname is not None:
        body["hostname"] = hostname
    return body


def https_listener(secret: str, hostname: str = SECURE_HOST) -> dict[str, Any]:
    return {
        "name": "https",
        "port": 443,
        "protocol": "HTTPS",
        "hostname": hostname,
        "tls": {"mode": "Terminate", "certificateRefs": [{"kind": "Secret", "name": secret}]},
    }


def route(
    kind: str, name: str, *rules: dict[str, Any], hostname: str, section: str | None = None
) -> dict[str, Any]:
    parent: dict[str, Any] = {"name": "gw"}
    if section is not None:
        parent["sectionName"] = section
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"parentRefs": [parent], "hostnames": [hostname], "rules": list(rules)},
    }


def prefix_rule(prefix: str, backend: str, port: int) -> dict[str, Any]:
    return {
        "matches": [{"path": {"type": "PathPrefix", "value": prefix}}],
        "backendRefs": [{"name": backend, "port": port}],
    }


def greeter_rule(backend: str) -> dict[str, Any]:
    return {"backendRefs": [{"name": f"greeter-{backend}", "port": 50051}]}


def greeters(backends: dict[str, GreeterBackend]) -> list[dict[str, Any]]:
    return [
        *(service(f"greeter-{name}") for name in backends),
        *(endpoint_slice(f"greeter-{name}", backend.port) for name, backend in backends.items()),
    ]


def conditions(under_test: Ingress) -> set[tuple[str, str, str, str]]:
    control_plane = under_test.control_plane
    assert control_plane is not None
    return {
        (c.object.kind, c.object.name, c.status.value, c.reason)
        for c in control_plane.pipeline.report.conditions
    }


# --- tests ----------------------------------------------------------------------


async def test_an_httproute_routes_http1_h2c_and_grpc_by_path(
    ingress_under_test: Ingress,
    backends: dict[str, GreeterBackend],
    web_backends: dict[str, WebBackend],
) -> None:
    config = ingress_under_test.config
    config.write(
        "services.yaml",
        *greeters(backends),
        *(http_service(name) for name in web_backends),
        *(http_slice(name, backend.port) for name, backend in web_backends.items()),
    )
    config.write(
        "gateway.yaml",
        gateway(http_listener("*.example.com")),
        route(
            "HTTPRoute",
            "web",
            prefix_rule("/a", "web-a", 80),
            prefix_rule("/b", "web-b", 80),
            # A gRPC call is an HTTP/2 POST to /package.Service/Method.
            prefix_rule(GREETER, "greeter-c", 50051),
            hostname=WEB_HOST,
        ),
    )
    await ingress_under_test.start()
    port = ingress_under_test.http_port

    async def http1_reaches_a() -> bool:
        return await get_http1(port, WEB_HOST, "/a/page") == (200, "web-a GET /a/page")

    await eventually(ingress_under_test, http1_reaches_a, "HTTP/1.1 /a → web-a")
    assert await get_http1(port, WEB_HOST, "/b") == (200, "web-b GET /b")
    # PathPrefix matches whole path elements.
    assert (await get_http1(port, WEB_HOST, "/about"))[0] == 404
    assert await get_h2c(port, WEB_HOST, "/b/x") == (200, "web-b GET /b/x")
    assert await get_h2c(port, WEB_HOST, "/a") == (200, "web-a GET /a")
    await routes_to(ingress_under_test, WEB_HOST, "c")
    # Another host is not the route's.
    assert (await get_http1(port, "other.example.com", "/a"))[0] == 404
    assert ("HTTPRoute", "web", "True", "Accepted") in conditions(ingress_under_test)


async def test_a_grpcroute_on_an_https_listener_is_served_over_tls_only(
    ingress_under_test: Ingress, backends: dict[str, GreeterBackend]
) -> None:
    ca = CertificateAuthority()
    config = ingress_under_test.config
    config.write("services.yaml", *greeters(backends))
    config.write("secret.yaml", tls_secret("site", ca.issue(SECURE_HOST), namespace=NAMESPACE))
    config.write(
        "gateway.yaml",
        gateway(http_listener(), https_listener("site")),
        route("GRPCRoute", "secure", greeter_rule("b"), hostname=SECURE_HOST, section="https"),
        route("GRPCRoute", "plain", greeter_rule("a"), hostname=PLAIN_HOST, section="http"),
    )
    await ingress_under_test.start()
    await routes_to_tls(ingress_under_test, TlsClient(ca_pem=ca.pem, server_name=SECURE_HOST), "b")
    await routes_to(ingress_under_test, PLAIN_HOST, "a")
    # Not over the plain listener: no route there for that host.
    plain = await say_hello(ingress_under_test.target, authority=SECURE_HOST)
    assert plain.code is grpc.StatusCode.UNIMPLEMENTED
    # And the plain route is not reachable over TLS, even on the secure connection.
    misdirected = await say_hello_tls(
        ingress_under_test,
        TlsClient(ca_pem=ca.pem, server_name=SECURE_HOST),
        authority=PLAIN_HOST,
    )
    assert misdirected.backend is None


async def test_a_bad_certificate_ref_costs_only_its_listener(
    ingress_under_test: Ingress, backends: dict[str, GreeterBackend]
) -> None:
    ca = CertificateAuthority()
    config = ingress_under_test.config
    config.write("services.yaml", *greeters(backends))
    config.write(
        "gateway.yaml",
        gateway(http_listener(), https_listener("missing")),
        route("GRPCRoute", "secure", greeter_rule("b"), hostname=SECURE_HOST, section="https"),
        route("GRPCRoute", "plain", greeter_rule("a"), hostname=PLAIN_HOST, section="http"),
    )
    await ingress_under_test.start()
    await routes_to(ingress_under_test, PLAIN_HOST, "a")
    found = conditions(ingress_under_test)
    assert ("Gateway", "gw", "False", "InvalidCertificateRef") in found
    assert ("GRPCRoute", "secure", "False", "NotAllowedByListeners") in found
    assert ("GRPCRoute", "plain", "True", "Accepted") in found
    client = TlsClient(ca_pem=ca.pem, server_name=SECURE_HOST)
    assert (await say_hello_tls(ingress_under_test, client)).backend is None

    # The Secret appears: the listener heals, the other one never stopped.
    config.write("secret.yaml", tls_secret("missing", ca.issue(SECURE_HOST), namespace=NAMESPACE))
    await routes_to_tls(ingress_under_test, client, "b")
    await routes_to(ingress_under_test, PLAIN_HOST, "a")


async def test_gateway_and_ingress_certificates_coalesce_and_421_alike(
    ingress_under_test: Ingress, backends: dict[str, GreeterBackend]
) -> None:
    ca = CertificateAuthority()
    wildcard = ca.issue("*.example.com")
    config = ingress_under_test.config
    config.write("services.yaml", *greeters(backends))
    config.write(
        "secrets.yaml",
        tls_secret("wild", wildcard, namespace=NAMESPACE),
        tls_secret("other", ca.issue("other.test"), namespace=NAMESPACE),
    )
    web = ingress(
        "web",
        [
            rule("b.example.com", ("/", "Prefix", "greeter-b")),
            rule("other.test", ("/", "Prefix", "greeter-c")),
        ],
    )
    web["spec"]["tls"] = [{"secretName": "other", "hosts": ["other.test"]}]
    config.write("ingress.yaml", web)
    config.write(
        "gateway.yaml",
        gateway(https_listener("wild", hostname="*.example.com")),
        route("GRPCRoute", "secure", greeter_rule("a"), hostname="a.example.com"),
    )
    await ingress_under_test.start()
    await routes_to_tls(
        ingress_under_test, TlsClient(ca_pem=ca.pem, server_name="a.example.com"), "a"
    )
    # The Gateway's certificate covers the Ingress's host too: one HTTP/2
    # connection carries both, and a host of another certificate gets 421.
    connection = await asyncio.to_thread(
        requests_on_one_connection,
        (LOOPBACK, ingress_under_test.https_port),
        server_name="a.example.com",
        ca_pem=ca.pem,
        requests=[
            Request("a.example.com"),
            Request("b.example.com"),
            Request("other.test", grpc=False),
        ],
    )
    assert connection.peer_certificate == wildcard.der
    a, b, other = connection.answers
    assert (a.status, a.backend) == (200, "a")
    assert (b.status, b.backend) == (200, "b")
    assert other.status == 421
    await routes_to_tls(ingress_under_test, TlsClient(ca_pem=ca.pem, server_name="other.test"), "c")
    # The GRPCRoute is on the HTTPS listener only; the Ingress is on both.
    await routes_to(ingress_under_test, "b.example.com", "b")
    plain = await say_hello(ingress_under_test.target, authority="a.example.com")
    assert plain.code is grpc.StatusCode.UNIMPLEMENTED
