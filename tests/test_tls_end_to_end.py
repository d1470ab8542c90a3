"""TLS offload with a real Envoy configured over ADS (delta and state of the world).

Certificates reach Envoy over SDS; clients pick a certificate by SNI; one
HTTP/2 connection serves every host its certificate covers, and a host it
does not cover is answered 421 so the client opens a connection of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl

import pytest
from h2_probe import Connection, Request, requests_on_one_connection
from ingress_harness import (
    Ingress,
    TlsClient,
    endpoint_slice,
    ingress,
    routes_to,
    routes_to_tls,
    rule,
    service,
)
from peers import wait_until
from tls_certs import CertificateAuthority, Issued, tls_secret

from xds_ingress.demo.backend import GreeterBackend

pytestmark = pytest.mark.timeout(120)

NAMESPACE = "demo"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority()


class Site:
    """Hosts a.example.com and b.example.com under one wildcard certificate,
    other.test under its own, and plain.test without TLS."""

    def __init__(self, under_test: Ingress, ca: CertificateAuthority) -> None:
        self.under_test = under_test
        self.ca = ca
        self.wildcard = ca.issue("*.example.com")
        self.other = ca.issue("other.test")

    def write(self, backends: dict[str, GreeterBackend]) -> None:
        names = ("a", "b", "c", "d")
        self.under_test.config.write(
            "services.yaml",
            *(service(f"greeter-{name}") for name in names),
            *(endpoint_slice(f"greeter-{name}", backends[name].port) for name in names),
        )
        self.write_wildcard(self.wildcard)
        self.under_test.config.write(
            "other-secret.yaml", tls_secret("other", self.other, namespace=NAMESPACE)
        )
        site = ingress(
            "site",
            [
                rule("a.example.com", ("/", "Prefix", "greeter-a")),
                rule("b.example.com", ("/", "Prefix", "greeter-b")),
                rule("other.test", ("/", "Prefix", "greeter-c")),
                rule("plain.test", ("/", "Prefix", "greeter-d")),
            ],
        )
        site["spec"]["tls"] = [
            {"hosts": ["a.example.com"], "secretName": "wildcard"},
            {"hosts": ["other.test"], "secretName": "other"},
        ]
        self.under_test.config.write("ingress.yaml", site)

    def write_wildcard(self, issued: Issued, **overrides: str) -> None:
        self.under_test.config.write(
            "wildcard-secret.yaml",
            tls_secret("wildcard", issued, namespace=NAMESPACE, **overrides),
        )

    def client(self, server_name: str) -> TlsClient:
        return TlsClient(ca_pem=self.ca.pem, server_name=server_name)

    async def one_connection(self, server_name: str, *requests: str | Request) -> Connection:
        """`requests`: Requests, or authorities to call SayHello on."""
        return await asyncio.to_thread(
            requests_on_one_connection,
            ("127.0.0.1", self.under_test.https_port),
            server_name=server_name,
            ca_pem=self.ca.pem,
            requests=[r if isinstance(r, Request) else Request(r) for r in requests],
        )


async def test_grpc_clients_reach_their_host_over_tls_by_sni(
    ingress_under_test: Ingress, backends: dict[str, GreeterBackend], ca: CertificateAuthority
) -> None:
    site = Site(ingress_under_test, ca)
    site.write(backends)
    await ingress_under_test.start()
    await routes_to_tls(ingress_under_test, site.client("a.example.com"), "a")
    # b.example.com is in no spec.tls, but the wildcard certificate covers it.
    await routes_to_tls(ingress_under_test, site.client("b.example.com"), "b")
    await routes_to_tls(ingress_under_test, site.client("other.test"), "c")
    # Every host is still served on plain HTTP too.
    await routes_to(ingress_under_test, "a.example.com", "a")
    await routes_to(ingress_under_test, "plain.test", "d")
    # No certificate serves plain.test: the handshake is refused, no other
    # host's certificate is shown.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await site.one_connection("plain.test", "plain.test")


async def test_one_connection_serves_every_host_of_its_certificate_and_421s_the_rest(
    ingress_under_test: Ingress, backends: dict[str, GreeterBackend], ca: CertificateAuthority
) -> None:
    site = Site(ingress_under_test, ca)
    site.write(backends)
    await ingress_under_test.start()
    await routes_to_tls(ingress_under_test, site.client("a.example.com"), "a")

    connection = await site.one_connection(
        "a.example.com",
        "a.example.com",
        "b.example.com",
        Request("other.test", grpc=False),
        Request("plain.test", grpc=False),
        "other.test",
    )
    assert connection.alpn == "h2"
    assert connection.peer_certificate == site.wildcard.der
    a, b, other, plain, other_grpc = connection.answers
    assert (a.status, a.grpc_status, a.backend) == (200, "0", "a")
    assert (b.status, b.grpc_status, b.backend) == (200, "0", "b")
    # Hosts the wildcard certificate does not cover are misdirected, so an
    # HTTP/2 client (a browser, grpc-web) retries them on a new connection.
    assert other.status == 421, other
    assert plain.status == 421, plain
    # Envoy answers a gRPC request's local reply in gRPC, with the status a
    # gRPC client would make of a 421 (UNKNOWN), saying why.
    assert (other_grpc.status, other_grpc.grpc_status) == (200, "2"), other_grpc
    assert "does not serve this host" in other_grpc.headers["grpc-message"]

    # The other certificate's connection serves other.test and sends the
    # wildcard's hosts away.
    connection = await site.one_connection(
        "other.test", "other.test", Request("a.example.com", grpc=False)
    )
    assert connection.peer_certificate == site.other.der
    mine, theirs = connection.answers
    assert (mine.status, mine.backend) == (200, "c")
    assert theirs.status == 421, theirs


async def test_a_rotated_certificate_is_served_without_restarting_envoy(
    ingress_under_test: Ingress, backends: dict[str, GreeterBackend], ca: CertificateAuthority
) -> None:
    site = Site(ingress_under_test, ca)
    site.write(backends)
    await ingress_under_test.start()
    envoy = ingress_under_test.envoy
    assert envoy is not None and envoy.process is not None
    pid = envoy.process.pid
    await routes_to_tls(ingress_under_test, site.client("a.example.com"), "a")

    rotated = ca.issue("*.example.com")

    async def serves(expected: Issued) -> bool:
        connection = await site.one_connection("a.example.com", "a.example.com")
        return connection.peer_certificate == expected.der and connection.answers[0].backend == "a"

    site.write_wildcard(rotated)
    await wait_until(lambda: serves(rotated), timeout=15, message="the rotated certificate")

    # A broken Secret (a key that is not the certificate's) costs only its
    # own hosts their TLS: Envoy is never sent what it would refuse.
    site.write_wildcard(rotated, key_pem=ca.issue("*.example.com").key_pem)

    async def refused() -> bool:
        try:
            await site.one_connection("a.example.com", "a.example.com")
        except (ssl.SSLError, ConnectionError):
            return True
        return False

    await wait_until(refused, timeout=15, message="a.example.com no longer served over TLS")
    await routes_to_tls(ingress_under_test, site.client("other.test"), "c")
    await routes_to(ingress_under_test, "a.example.com", "a")
    control_plane = ingress_under_test.control_plane
    assert control_plane is not None
    reasons = {c.reason for c in control_plane.pipeline.report.conditions}
    assert "KeyMismatch" in reasons

    site.write_wildcard(site.wildcard)
    await wait_until(lambda: serves(site.wildcard), timeout=15, message="the fixed certificate")
    assert envoy.process is not None and envoy.process.pid == pid, "Envoy was restarted"


async def test_the_private_key_reaches_envoy_only_over_sds_and_never_a_log(
    ingress_under_test: Ingress,
    backends: dict[str, GreeterBackend],
    ca: CertificateAuthority,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    site = Site(ingress_under_test, ca)
    site.write(backends)
    await ingress_under_test.start()
    await routes_to_tls(ingress_under_test, site.client("a.example.com"), "a")
    envoy = ingress_under_test.envoy
    assert envoy is not None

    # The key's PEM body, as lines: no dump or log may hold any of them.
    key_lines = [
        line
        for issued in (site.wildcard, site.other)
        for line in issued.key_pem.splitlines()
        if "PRIVATE KEY" not in line
    ]
    assert key_lines

    dump = await asyncio.to_thread(envoy.admin_get, "/config_dump")
    listeners = json.dumps(
        [c for c in json.loads(dump)["configs"] if "ListenersConfigDump" in c["@type"]]
    )
    assert '"name": "https"' in listeners
    assert "tls_certificate_sds_secret_configs" in listeners
    assert "PRIVATE KEY" not in dump
    assert not [line for line in key_lines if line in dump]
    # Envoy holds the secrets it was sent over SDS, named as our Secrets.
    secrets = await asyncio.to_thread(
        envoy.admin_get, "/config_dump?resource=dynamic_active_secrets"
    )
    assert "demo/wildcard" in secrets and "demo/other" in secrets

    logs = "\n".join(record.getMessage() for record in caplog.records)
    logs += "\n" + "\n".join(str(record.exc_info) for record in caplog.records if record.exc_info)
    assert "transport_sockets.tls.v3.Secret" in logs, "the DEBUG log of sending secrets"
    assert not [line for line in key_lines if line in logs]
    envoy_log = envoy.log_path.read_text(errors="replace")
    assert not [line for line in key_lines if line in envoy_log]
