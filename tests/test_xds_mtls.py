"""The xDS and admin ports speak mTLS: only a client the CA vouches for gets configuration.

Real peers throughout: the control plane in-process (and as `xds-ingress
serve` for the command-line path), a real Envoy presenting its client
certificate, grpcio clients with and without certificates, and grpcurl as an
operator would run it from the README.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ingress_harness import Ingress, endpoint_slice, ingress, routes_to, rule, service
from mtls import ControlPlanePki
from peers import EnvoyFactory, envoy_binary, free_port, run_grpcurl, wait_until

from xds_ingress.admin.v1 import admin_pb2, admin_pb2_grpc
from xds_ingress.bootstrap import ClientTls, render_bootstrap
from xds_ingress.demo.backend import GreeterBackend
from xds_ingress.server.grpc_server import READINESS_SERVICE

pytestmark = pytest.mark.timeout(90)

ADMIN = "xds_ingress.admin.v1.Admin"
XDS_INGRESS = Path(sys.executable).parent / "xds-ingress"


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Ingress]:
    """A control plane on mTLS (xDS and admin ports, plus a plaintext health port) and an Envoy."""
    under_test = Ingress(workdir=tmp_path, delta=True, mtls=True, inspection_port=free_port())
    yield under_test
    await under_test.stop()


async def _start_with_a_route(under_test: Ingress) -> GreeterBackend:
    backend = GreeterBackend(name="a")
    port = await backend.start()
    under_test.config.write(
        "services.yaml", service("greeter-a"), endpoint_slice("greeter-a", port)
    )
    under_test.config.write(
        "ingress.yaml", ingress("main", [rule("a.example.com", ("/", "Prefix", "greeter-a"))])
    )
    await under_test.start()
    return backend


async def _list_nodes(target: str, credentials: grpc.ChannelCredentials | None) -> list[str]:
    channel = (
        grpc.aio.secure_channel(target, credentials)
        if credentials is not None
        else grpc.aio.insecure_channel(target)
    )
    async with channel:
        reply = await admin_pb2_grpc.AdminStub(channel).ListNodes(
            admin_pb2.ListNodesRequest(), timeout=3.0
        )
    return [node.node_id for node in reply.nodes]


async def test_envoy_with_the_client_certificate_gets_its_config_and_others_are_refused(
    secured: Ingress, tmp_path: Path
) -> None:
    backend = await _start_with_a_route(secured)
    try:
        await routes_to(secured, "a.example.com", "a")
        assert secured.inspection_port is not None
        pki = secured.pki
        for port in (secured.xds_port, secured.inspection_port):
            target = f"127.0.0.1:{port}"
            # The CA's client: sees the Envoy that connected over mTLS.
            assert await _list_nodes(target, pki.channel_credentials()) == ["test-envoy"]

            # A client that trusts the server but shows no certificate.
            no_cert = grpc.ssl_channel_credentials(root_certificates=pki.ca_file.read_bytes())
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _list_nodes(target, no_cert)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

            # A certificate from another CA (which the client itself trusts).
            stranger = ControlPlanePki.create(tmp_path / f"stranger-{port}", ca_name="other CA")
            foreign = grpc.ssl_channel_credentials(
                root_certificates=pki.ca_file.read_bytes(),
                private_key=stranger.client.key.read_bytes(),
                certificate_chain=stranger.client.cert.read_bytes(),
            )
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _list_nodes(target, foreign)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

            # Plaintext to an mTLS port.
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _list_nodes(target, None)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await backend.stop(grace=None)


async def test_an_envoy_with_a_foreign_certificate_gets_nothing(
    secured: Ingress, tmp_path: Path, envoy_factory: EnvoyFactory
) -> None:
    await secured.start_control_plane()
    stranger = ControlPlanePki.create(tmp_path / "stranger", ca_name="other CA")
    bootstrap = render_bootstrap(
        xds_address=f"127.0.0.1:{secured.xds_port}",
        node_id="intruder",
        node_cluster="test",
        admin_address="127.0.0.1:0",
        tls=ClientTls(
            cert_file=str(stranger.client.cert),
            key_file=str(stranger.client.key),
            # It trusts the real server: only its own certificate is wrong.
            ca_file=str(secured.pki.ca_file),
        ),
    )
    envoy = envoy_factory(bootstrap, name="intruder")
    # It keeps trying; the control plane never sees a stream from it.
    await envoy.wait_for(
        lambda: (
            envoy.stat("cluster.xds_cluster.upstream_cx_connect_fail")
            + envoy.stat("cluster.xds_cluster.upstream_cx_destroy")
            >= 1
        ),
        timeout=15,
        message="a refused connection",
    )
    assert envoy.server_state() != "LIVE"
    assert (
        await _list_nodes(f"127.0.0.1:{secured.xds_port}", secured.pki.channel_credentials()) == []
    )


async def test_grpcurl_with_the_client_certificate_lists_and_calls(secured: Ingress) -> None:
    backend = await _start_with_a_route(secured)
    try:
        target = f"127.0.0.1:{secured.xds_port}"
        # The README's recipe: the CA, the client's certificate and key.
        code, out, err = await run_grpcurl([*secured.pki.grpcurl_flags(), target, "list"])
        assert code == 0, err
        assert ADMIN in out.split()
        code, out, err = await run_grpcurl(
            [*secured.pki.grpcurl_flags(), target, f"{ADMIN}/ListNodes"]
        )
        assert code == 0, err
        assert [node["node_id"] for node in json.loads(out)["nodes"]] == ["test-envoy"]
        # Without a client certificate grpcurl gets nothing.
        code, _out, err = await run_grpcurl(
            ["-cacert", str(secured.pki.ca_file), target, "list"], timeout=15
        )
        assert code != 0
        code, _out, _err = await run_grpcurl(["-plaintext", target, "list"], timeout=15)
        assert code != 0
    finally:
        await backend.stop(grace=None)


async def test_a_renewed_certificate_is_served_without_a_restart(
    secured: Ingress, tmp_path: Path
) -> None:
    await secured.start_control_plane()
    target = f"127.0.0.1:{secured.xds_port}"
    old = secured.pki
    assert await _list_nodes(target, old.channel_credentials()) == []
    # cert-manager renews from a new CA: all three files change in place.
    new = ControlPlanePki.create(tmp_path / "renewed", ca_name="renewed CA")
    for source, destination in (
        (new.server.cert, old.server.cert),
        (new.server.key, old.server.key),
        (new.ca_file, old.ca_file),
    ):
        shutil.copyfile(source, destination)

    async def renewed_accepted() -> bool:
        return await _list_nodes(target, new.channel_credentials()) == []

    await wait_until(renewed_accepted, timeout=10, message="the renewed certificate served")
    stale = grpc.ssl_channel_credentials(
        root_certificates=new.ca_file.read_bytes(),
        private_key=old.client.key.read_bytes(),
        certificate_chain=old.client.cert.read_bytes(),
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await _list_nodes(target, stale)


async def test_a_half_written_certificate_keeps_the_current_one(
    secured: Ingress, tmp_path: Path
) -> None:
    await secured.start_control_plane()
    target = f"127.0.0.1:{secured.xds_port}"
    secured.pki.server.cert.write_text("-----BEGIN CERTIFICATE-----\ntruncat")
    for _ in range(3):
        assert await _list_nodes(target, secured.pki.channel_credentials()) == []


# ---------------------------------------------------------------- the command line


def _serve(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(XDS_INGRESS), "serve", "--source", str(tmp_path), *flags],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("flags", "complaint"),
    [
        ((), "pass --xds-tls-cert, --xds-tls-key, --xds-client-ca (or --insecure"),
        (("--xds-tls-cert", "c.pem"), "mTLS needs --xds-tls-key, --xds-client-ca too"),
        (("--insecure", "--xds-client-ca", "ca.pem"), "exclude each other"),
        (
            ("--xds-tls-cert", "missing.crt", "--xds-tls-key", "k", "--xds-client-ca", "c"),
            "cannot read missing.crt",
        ),
    ],
)
def test_serve_needs_mtls_files_or_insecure(
    tmp_path: Path, flags: tuple[str, ...], complaint: str
) -> None:
    result = _serve(tmp_path, *flags, "--xds-address", f"127.0.0.1:{free_port()}")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert complaint in line


def test_serve_refuses_a_key_that_is_not_the_certificates(tmp_path: Path) -> None:
    pki = ControlPlanePki.create(tmp_path / "pki")
    flags = pki.serve_flags()
    flags[flags.index("--xds-tls-key") + 1] = str(pki.client.key)
    result = _serve(tmp_path / "pki", *flags)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert f"{pki.client.key} is not the key of {pki.server.cert}" in line


async def test_serve_with_mtls_answers_grpcurl_and_probes_in_plaintext(tmp_path: Path) -> None:
    pki = ControlPlanePki.create(tmp_path / "pki")
    config = tmp_path / "config"
    config.mkdir()
    xds, admin, health = free_port(), free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        str(XDS_INGRESS),
        "serve",
        "--source",
        str(config),
        "--xds-address",
        f"127.0.0.1:{xds}",
        "--admin-address",
        f"127.0.0.1:{admin}",
        "--health-address",
        f"127.0.0.1:{health}",
        "--http-port",
        str(free_port()),
        *pki.serve_flags(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        # What kubelet's gRPC probe does: plaintext health, readiness included.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{health}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            async def ready() -> bool:
                reply = await stub.Check(
                    health_pb2.HealthCheckRequest(service=READINESS_SERVICE), timeout=1.0
                )
                return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

            await wait_until(ready, timeout=20, message="readiness on the health port")
            # The health port serves health alone: no admin API in plaintext.
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await admin_pb2_grpc.AdminStub(channel).ListNodes(
                    admin_pb2.ListNodesRequest(), timeout=2.0
                )
            assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED
        for port in (xds, admin):
            code, out, err = await run_grpcurl(
                [*pki.grpcurl_flags(), f"127.0.0.1:{port}", f"{ADMIN}/ListNodes"]
            )
            assert (code, json.loads(out)) == (0, {}), err
            code, _out, _err = await run_grpcurl(["-plaintext", f"127.0.0.1:{port}", "list"])
            assert code != 0
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 20)
    assert process.returncode == 0


def test_envoy_validates_a_bootstrap_with_client_certificates(tmp_path: Path) -> None:
    pki = ControlPlanePki.create(tmp_path / "pki")
    bootstrap = render_bootstrap(
        xds_address=["xds.example.svc:18000", "127.0.0.1:18000"],
        node_id="validate",
        node_cluster="c",
        admin_address=None,
        tls=pki.client_tls(),
    )
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(bootstrap))
    result = subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "--config-path", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
