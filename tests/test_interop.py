"""The grpc-go interop client against the grpc-go interop server behind the ingress, over TLS.

The client connects to the HTTPS listener with SNI (and :authority)
interop.example.com, trusting a CA made for this run; Envoy terminates TLS
and calls the server over h2c. Built by `scripts/install-test-deps.sh interop`.

The interop server has no address flag: it listens on all interfaces of a
port chosen here, for the few seconds of the test; all traffic is loopback.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from ingress_harness import NAMESPACE, Ingress, ingress, rule, service
from peers import REPO, MissingTestDependency, free_port, wait_until
from tls_certs import CertificateAuthority, tls_secret

pytestmark = pytest.mark.timeout(120)

HOST = "interop.example.com"
TEST_CASES = (
    "empty_unary",
    "large_unary",
    "client_streaming",
    "server_streaming",
    "ping_pong",
    "empty_stream",
    "timeout_on_sleeping_server",
    "custom_metadata",
    "status_code_and_message",
    "special_status_message",
    "unimplemented_method",
    "cancel_after_begin",
    "cancel_after_first_response",
)


def interop_binary(role: str) -> Path:
    path = REPO / ".cache" / "bin" / f"grpc-interop-{role}"
    if not path.is_file():
        raise MissingTestDependency(
            f"no {path}: run `scripts/install-test-deps.sh interop` (needs Go)"
        )
    return path


@pytest.fixture
def interop_server() -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(
        [str(interop_binary("server")), f"-port={port}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture
async def ingress_under_test(tmp_path: Path) -> AsyncIterator[Ingress]:
    under_test = Ingress(workdir=tmp_path, delta=True)
    yield under_test
    await under_test.stop()


async def run_client(
    under_test: Ingress, ca_file: Path, test_case: str, *, kill_after: float = 20.0
) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        str(interop_binary("client")),
        "-server_host=127.0.0.1",
        f"-server_port={under_test.https_port}",
        "-use_tls",
        # With -use_test_ca the client trusts -ca_file (our CA) instead of
        # the system roots; the override is both the SNI and the :authority.
        "-use_test_ca",
        f"-ca_file={ca_file}",
        f"-server_host_override={HOST}",
        f"-test_case={test_case}",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), kill_after)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise TimeoutError(
            f"interop client {test_case} still running after {kill_after:g} s"
        ) from None
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def test_grpc_go_interop_cases_pass_through_the_tls_listener(
    ingress_under_test: Ingress, interop_server: int, tmp_path: Path
) -> None:
    ca = CertificateAuthority()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.pem)
    backend = service("interop")
    backend["spec"]["ports"] = [{"name": "grpc", "port": 10000, "appProtocol": "grpc"}]
    site = ingress("interop", [rule(HOST, ("/", "Prefix", "interop"))])
    site["spec"]["tls"] = [{"hosts": [HOST], "secretName": "interop"}]
    ingress_under_test.config.write(
        "interop.yaml",
        backend,
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "interop",
                "namespace": NAMESPACE,
                "labels": {"kubernetes.io/service-name": "interop"},
            },
            "addressType": "IPv4",
            "ports": [{"name": "grpc", "port": interop_server}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        },
        tls_secret("interop", ca.issue(HOST), namespace=NAMESPACE),
        site,
    )
    await ingress_under_test.start_control_plane()
    await (await ingress_under_test.start_envoy()).wait_live()

    async def served() -> bool:
        code, _ = await run_client(ingress_under_test, ca_file, "empty_unary", kill_after=5)
        return code == 0

    await wait_until(served, timeout=20, interval=0.2, message="the interop server is routed")
    failed = {}
    for test_case in TEST_CASES:
        code, output = await run_client(ingress_under_test, ca_file, test_case)
        if code != 0:
            failed[test_case] = output[-800:]
    assert not failed, failed
    # Every case went through Envoy to the server (the client exits 0 silently).
    assert ingress_under_test.envoy is not None
    # Envoy writes the cluster's ":" as "_" in stat names.
    stats = ingress_under_test.envoy.admin_get(
        "/stats?filter=^cluster.demo/interop_10000.upstream_rq_total$"
    )
    assert stats.strip().endswith(tuple("0123456789")), stats
    assert int(stats.rsplit(":", 1)[1]) >= len(TEST_CASES), stats
