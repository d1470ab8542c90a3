"""`xds-ingress demo`: the whole ingress on loopback, for a first look.

Two Greeter backends, the control plane reading a copy of `examples/` (with
the EndpointSlices pointing at the backends' real ports) and a real Envoy
configured over ADS. Ctrl-C stops every process it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import yaml

from xds_ingress.app import ControlPlane, wait_for_signal
from xds_ingress.bootstrap import render_bootstrap
from xds_ingress.demo.backend import GreeterBackend
from xds_ingress.demo.v1 import greeter_pb2, greeter_pb2_grpc
from xds_ingress.envoy_launcher import EnvoyLauncher
from xds_ingress.settings import HostPort, ServeSettings

log = logging.getLogger(__name__)

ENDPOINTS_FILE = "endpoints.yaml"
BACKENDS = {"a": "greeter-a", "b": "greeter-b"}
NAMESPACE = "demo"


@dataclass(frozen=True, slots=True)
class DemoSettings:
    examples: Path
    http_port: int
    xds_port: int
    admin_port: int
    delta: bool = True


def endpoint_slices(ports: dict[str, int]) -> list[dict[str, object]]:
    """EndpointSlices putting each demo Service on its backend's real port."""
    return [
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{service}-local",
                "namespace": NAMESPACE,
                "labels": {"kubernetes.io/service-name": service},
            },
            "addressType": "IPv4",
            "ports": [{"name": "grpc", "port": ports[backend], "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        }
        for backend, service in BACKENDS.items()
    ]


async def wait_until_routed(target: str, *, authority: str, within_seconds: float) -> str:
    """Call SayHello through Envoy until it answers; return the backend's name."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_seconds
    last_error = "no attempt"
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.default_authority", authority)]
    ) as channel:
        stub = greeter_pb2_grpc.GreeterStub(channel)
        while loop.time() < deadline:
            try:
                reply = await stub.SayHello(greeter_pb2.HelloRequest(name="demo"), timeout=1.0)
                return str(reply.backend)
            except grpc.aio.AioRpcError as error:
                last_error = f"{error.code().name}: {error.details()}"
            await asyncio.sleep(0.2)
    raise TimeoutError(f"no answer through Envoy at {target}: {last_error}")


@contextlib.asynccontextmanager
async def _backends() -> AsyncIterator[dict[str, int]]:
    servers = {name: GreeterBackend(name=name) for name in BACKENDS}
    try:
        yield {name: await server.start() for name, server in servers.items()}
    finally:
        for server in servers.values():
            await server.stop()


async def run_demo(settings: DemoSettings) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="xds-ingress-demo-"))
    source = workdir / "config"
    shutil.copytree(settings.examples, source, ignore=shutil.ignore_patterns(ENDPOINTS_FILE))
    async with _backends() as ports:
        (source / ENDPOINTS_FILE).write_text(yaml.safe_dump_all(endpoint_slices(ports)))
        control_plane = ControlPlane.from_settings(
            ServeSettings(
                source=str(source),
                xds_address=HostPort("127.0.0.1", settings.xds_port),
                listen_address="127.0.0.1",
                http_port=settings.http_port,
                https_port=settings.http_port + 1,
                holdoff_seconds=0.05,
                max_holdoff_seconds=0.5,
                # Plaintext xDS, as `serve --insecure`: everything is on
                # loopback, and the printed grpcurl commands stay short.
                xds_tls=None,
            )
        )
        envoy = EnvoyLauncher(
            bootstrap=render_bootstrap(
                xds_address=f"127.0.0.1:{settings.xds_port}",
                node_id="demo-envoy",
                node_cluster="demo",
                admin_address=f"127.0.0.1:{settings.admin_port}",
                delta=settings.delta,
            ),
            workdir=workdir / "envoy",
            admin_port=settings.admin_port,
        )
        await control_plane.start()
        try:
            await envoy.start()
            target = f"127.0.0.1:{settings.http_port}"
            answered_by = await wait_until_routed(
                target, authority="a.greeter.local", within_seconds=30
            )
            _print_welcome(settings, source=source, answered_by=answered_by, envoy=envoy)
            await wait_for_signal()
        finally:
            print("\nstopping Envoy, the control plane and the backends", flush=True)
            await envoy.stop()
            await control_plane.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def _print_welcome(
    settings: DemoSettings, *, source: Path, answered_by: str, envoy: EnvoyLauncher
) -> None:
    target = f"127.0.0.1:{settings.http_port}"
    # `make run` builds grpcurl into .cache/bin, which is not on the user's PATH.
    grpcurl = shutil.which("grpcurl") or "grpcurl"
    print(
        f"""
xds-ingress demo is running (backend {answered_by!r} answered through Envoy).

  Envoy (gRPC ingress)  {target}
  control plane (xDS)   127.0.0.1:{settings.xds_port}
  Envoy admin           http://127.0.0.1:{settings.admin_port}/
  configuration         {source}   (edit it: changes apply without restarts)
  Envoy log             {envoy.log_path}

Call a backend through the ingress (host a.greeter.local -> greeter-a, b.greeter.local -> b):

  {grpcurl} -plaintext -authority a.greeter.local -d '{{"name": "you"}}' \\
      {target} xds_ingress.demo.v1.Greeter/SayHello
  {grpcurl} -plaintext -authority b.greeter.local -d '{{"name": "you"}}' \\
      {target} xds_ingress.demo.v1.Greeter/SayHello

Inspect the control plane (reflection and health are on the xDS port; plaintext
here, as `serve --insecure`: a deployment serves it over mTLS, see README.md):

  {grpcurl} -plaintext 127.0.0.1:{settings.xds_port} list

Press Ctrl-C to stop.""",
        flush=True,
    )
