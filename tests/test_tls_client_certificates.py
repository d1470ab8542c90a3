"""Certificates checked both ways, with a real Envoy and real grpcio peers.

Client certificates (mTLS) per host from a CA Secret: a client with a
certificate of that CA gets through; one without, or with another CA's, fails
the handshake; a host of the same server certificate without mTLS is served
on a filter chain of its own, and a connection to it cannot be used for the
mTLS host (421); a CA Secret that is missing fails closed (403) with a
condition. Backends over TLS (GRPCS): verified against a CA Secret when the
Ingress names one, refused (UNAVAILABLE) when the backend's certificate is
not of that CA or not for the SNI; unverified without a CA, as ingress-nginx.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from h2_probe import Request, requests_on_one_connection
from ingress_harness import NAMESPACE, Ingress, ingress, routes_to, rule, say_hello, service
from peers import wait_until
from test_grpc_end_to_end import Servers, annotated, slice_of, start
from tls_certs import CertificateAuthority, key_pem, tls_secret

from xds_ingress.demo.backend import Greeter, GreeterBackend
from xds_ingress.demo.v1 import greeter_pb2, greeter_pb2_grpc

pytestmark = pytest.mark.timeout(120)

CLIENT_CA_SECRET = "xds-ingress.io/client-ca-secret"
BACKEND_CA_SECRET = "xds-ingress.io/backend-ca-secret"
BACKEND_SNI = "xds-ingress.io/backend-sni"
BACKEND_PROTOCOL = "nginx.ingress.kubernetes.io/backend-protocol"


@pytest.fixture(params=["delta", "sotw"])
async def ingress_under_test(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Ingress]:
    # Both xDS variants: the CAs are SDS resources that listeners and
    # clusters ask for by name.
    under_test = Ingress(workdir=tmp_path, delta=request.param == "delta")
    yield under_test
    await under_test.stop()


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    started = Servers()
    yield started
    for server in started.servers:
        await server.stop(grace=None)


def client_certificate(ca: CertificateAuthority, name: str) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) of a client certificate `ca` signs."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem(key).encode()


def ca_secret(name: str, ca: CertificateAuthority) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "type": "Opaque",
        "data": {"ca.crt": base64.b64encode(ca.pem).decode()},
    }


async def call_tls(
    under_test: Ingress,
    *,
    server_ca: CertificateAuthority,
    host: str,
    client: tuple[bytes, bytes] | None = None,
) -> tuple[str, grpc.StatusCode]:
    """One SayHello over TLS with SNI `host`, presenting `client` (cert, key) if given."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=server_ca.pem,
        private_key=None if client is None else client[1],
        certificate_chain=None if client is None else client[0],
    )
    options = [
        ("grpc.ssl_target_name_override", host),
        ("grpc.default_authority", host),
        ("grpc.enable_retries", 0),
    ]
    target = f"127.0.0.1:{under_test.https_port}"
    async with grpc.aio.secure_channel(target, credentials, options=options) as channel:
        stub = greeter_pb2_grpc.GreeterStub(channel)
        try:
            reply = await stub.SayHello(greeter_pb2.HelloRequest(name="mtls"), timeout=3)
        except grpc.aio.AioRpcError as error:
            return "", error.code()
    return reply.backend, grpc.StatusCode.OK


def conditions_of(under_test: Ingress, name: str) -> set[tuple[str, str, str]]:
    assert under_test.control_plane is not None
    return {
        (c.type, c.status.value, c.reason)
        for c in under_test.control_plane.pipeline.report.conditions
        if c.object.kind == "Ingress" and c.object.name == name
    }


def tls_ingress(name: str, host: str, secret: str, annotations: dict[str, str]) -> dict[str, Any]:
    body = ingress(name, [rule(host, ("/", "Prefix", "greeter-a"))])
    body["spec"]["tls"] = [{"hosts": [host], "secretName": secret}]
    return annotated(body, annotations)


async def test_client_certificates_are_checked_per_host_and_fail_closed(
    ingress_under_test: Ingress,
) -> None:
    server_ca = CertificateAuthority("server CA")
    clients_ca = CertificateAuthority("clients CA")
    strangers_ca = CertificateAuthority("strangers CA")
    # One certificate for every host: mTLS must split its filter chain.
    issued = server_ca.issue("*.example.com")
    async with GreeterBackend(name="a") as backend:
        ingress_under_test.config.write(
            "site.yaml",
            service("greeter-a"),
            slice_of("greeter-a", backend.port),
            tls_secret("site", issued, namespace=NAMESPACE),
            ca_secret("clients", clients_ca),
            tls_ingress("secure", "secure.example.com", "site", {CLIENT_CA_SECRET: "clients"}),
            tls_ingress("public", "public.example.com", "site", {}),
            tls_ingress("broken", "broken.example.com", "site", {CLIENT_CA_SECRET: "missing"}),
        )
        await start(ingress_under_test)
        member = client_certificate(clients_ca, "member")
        stranger = client_certificate(strangers_ca, "stranger")

        async def secure_served() -> bool:
            result = await call_tls(
                ingress_under_test, server_ca=server_ca, host="secure.example.com", client=member
            )
            return result == ("a", grpc.StatusCode.OK)

        await wait_until(secure_served, timeout=15, interval=0.2, message="mTLS host served")
        # Without a certificate, or with one of another CA: no handshake.
        for client in (None, stranger):
            backend_name, code = await call_tls(
                ingress_under_test, server_ca=server_ca, host="secure.example.com", client=client
            )
            assert (backend_name, code) == ("", grpc.StatusCode.UNAVAILABLE)
        # The host sharing the certificate asks for none.
        assert await call_tls(
            ingress_under_test, server_ca=server_ca, host="public.example.com"
        ) == (
            "a",
            grpc.StatusCode.OK,
        )
        # A connection made without a client certificate cannot be reused
        # (HTTP/2 coalescing) for the mTLS host: 421, so the client opens one.
        connection = await asyncio.to_thread(
            requests_on_one_connection,
            ("127.0.0.1", ingress_under_test.https_port),
            server_name="public.example.com",
            ca_pem=server_ca.pem,
            requests=[
                Request("public.example.com"),
                Request("secure.example.com", grpc=False),
                Request("secure.example.com"),
            ],
        )
        public, secure_plain, secure_grpc = connection.answers
        assert (public.status, public.backend) == (200, "a")
        assert secure_plain.status == 421, secure_plain
        # In gRPC, a 421 is UNKNOWN, saying why.
        assert (secure_grpc.status, secure_grpc.grpc_status) == (200, "2"), secure_grpc
        assert "does not serve this host" in secure_grpc.headers["grpc-message"]
        # Plain HTTP is no way around the check.
        result = await say_hello(ingress_under_test.target, authority="secure.example.com")
        assert (result.backend, result.code) == (None, grpc.StatusCode.PERMISSION_DENIED)
        assert (
            await say_hello(ingress_under_test.target, authority="public.example.com")
        ).backend == "a"
        # A CA Secret that is missing: reported, and the host fails closed,
        # whatever certificate the client has.
        assert ("ResolvedRefs", "False", "SecretNotFound") in conditions_of(
            ingress_under_test, "broken"
        )
        for client in (None, member):
            assert await call_tls(
                ingress_under_test, server_ca=server_ca, host="broken.example.com", client=client
            ) == ("", grpc.StatusCode.PERMISSION_DENIED)
        # The CA is an SDS secret of its own; the listener only names it.
        assert ingress_under_test.envoy is not None
        secrets = ingress_under_test.envoy.admin_get("/config_dump?resource=dynamic_active_secrets")
        assert "demo/clients/ca.crt" in secrets
        listeners = ingress_under_test.envoy.admin_get(
            "/config_dump?resource=dynamic_listeners", timeout=5
        )
        assert "demo/clients/ca.crt" in listeners
        assert "BEGIN CERTIFICATE" not in listeners


async def test_grpcs_backends_are_verified_against_the_ca_an_ingress_names(
    ingress_under_test: Ingress, servers: Servers
) -> None:
    backend_ca = CertificateAuthority("backend CA")
    other_ca = CertificateAuthority("other CA")
    issued = backend_ca.issue("tls-greeter.demo.svc")
    credentials = grpc.ssl_server_credentials([(issued.key_pem.encode(), issued.cert_pem.encode())])
    port = await servers.start(Greeter(name="h2"), credentials=credentials)
    tls_service = service("tls-greeter")
    tls_service["spec"]["ports"] = [{"name": "web", "port": 80}]

    def grpcs(name: str, host: str, **annotations: str) -> dict[str, Any]:
        backend = {"service": {"name": "tls-greeter", "port": {"number": 80}}}
        rules = [
            {
                "host": host,
                "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]},
            }
        ]
        return annotated(ingress(name, rules), {BACKEND_PROTOCOL: "GRPCS", **annotations})

    ingress_under_test.config.write(
        "site.yaml",
        tls_service,
        slice_of("tls-greeter", port, port_name="web"),
        ca_secret("backend-ca", backend_ca),
        ca_secret("other-ca", other_ca),
        grpcs("verified", "verified.example.com", **{BACKEND_CA_SECRET: "backend-ca"}),
        grpcs("wrong-ca", "wrong-ca.example.com", **{BACKEND_CA_SECRET: "other-ca"}),
        grpcs(
            "wrong-sni",
            "wrong-sni.example.com",
            **{BACKEND_CA_SECRET: "backend-ca", BACKEND_SNI: "someone-else.demo.svc"},
        ),
        grpcs("no-ca-secret", "no-ca-secret.example.com", **{BACKEND_CA_SECRET: "missing"}),
        grpcs("unverified", "unverified.example.com"),
    )
    await start(ingress_under_test)
    await routes_to(ingress_under_test, "verified.example.com", "h2")
    await routes_to(ingress_under_test, "unverified.example.com", "h2")
    for host in ("wrong-ca.example.com", "wrong-sni.example.com"):
        result = await say_hello(ingress_under_test.target, authority=host)
        assert (result.backend, result.code) == (None, grpc.StatusCode.UNAVAILABLE), host
    # A CA Secret that is not there: never called unverified; 503 and a condition.
    result = await say_hello(ingress_under_test.target, authority="no-ca-secret.example.com")
    assert (result.backend, result.code) == (None, grpc.StatusCode.UNAVAILABLE)
    assert ("ResolvedRefs", "False", "SecretNotFound") in conditions_of(
        ingress_under_test, "no-ca-secret"
    )
    assert ingress_under_test.envoy is not None
    # The CA reached Envoy over SDS, as a Secret of its own.
    dump = ingress_under_test.envoy.admin_get("/config_dump?resource=dynamic_active_secrets")
    assert "demo/backend-ca/ca.crt" in dump
