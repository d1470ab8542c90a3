"""`xds-ingress serve` as a child process, for tests that kill and restart it.

The control plane serves mTLS on its xDS port (the production path) with the
certificates of a `ControlPlanePki`, plaintext gRPC health on a port of its
own (as kubelet probes it), and reads a config folder. Killing it with
SIGKILL is what a node crash or the OOM killer does: no goodbye to Envoy.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mtls import ControlPlanePki
from peers import LOOPBACK, free_port, wait_until

from xds_ingress.admin.v1 import admin_pb2, admin_pb2_grpc
from xds_ingress.server.grpc_server import READINESS_SERVICE

XDS_INGRESS = Path(sys.executable).parent / "xds-ingress"


class ControlPlaneExited(RuntimeError):
    """The control plane is not running when the test expected it to be."""


@dataclass
class ControlPlaneProcess:
    source: Path
    pki: ControlPlanePki
    http_port: int
    workdir: Path
    name: str = "control-plane"
    xds_port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    https_port: int = field(default_factory=free_port)
    poll_seconds: float = 0.05
    _process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None
    starts: int = 0

    @property
    def xds_address(self) -> str:
        return f"{LOOPBACK}:{self.xds_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise ControlPlaneExited(f"{self.name} was never started")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        return [
            str(XDS_INGRESS),
            "serve",
            "--source",
            str(self.source),
            "--xds-address",
            self.xds_address,
            "--health-address",
            f"{LOOPBACK}:{self.health_port}",
            "--listen-address",
            LOOPBACK,
            "--http-port",
            str(self.http_port),
            "--https-port",
            str(self.https_port),
            "--holdoff",
            "0.02",
            "--max-holdoff",
            "0.2",
            "--poll-interval",
            str(self.poll_seconds),
            *self.pki.serve_flags(),
        ]

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._close_log()
        self.starts += 1
        self._log = self.log_path.open("ab")
        self._log.write(f"=== start {self.starts}\n".encode())
        self._log.flush()
        self._process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT
        )

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to close its streams."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        self._close_log()

    def terminate(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def check_running(self) -> None:
        if not self.running:
            raise ControlPlaneExited(f"{self.name} exited; log ends:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def rss_bytes(self) -> int:
        """Resident memory of the process now (Linux /proc)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc status")

    async def wait_ready(self, *, within_seconds: float = 20.0) -> None:
        """Until the first snapshot is published (readiness, as kubelet asks it)."""

        async def ready() -> bool:
            self.check_running()
            async with grpc.aio.insecure_channel(f"{LOOPBACK}:{self.health_port}") as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=READINESS_SERVICE), timeout=1.0
                )
            return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

        await wait_until(
            ready,
            timeout=within_seconds,
            message=f"{self.name} ready",
            fatal=(ControlPlaneExited,),
        )

    async def list_nodes(self) -> list[admin_pb2.Node]:
        """The streams of this control plane (admin API over mTLS)."""
        self.check_running()
        async with grpc.aio.secure_channel(
            self.xds_address, self.pki.channel_credentials()
        ) as channel:
            reply: admin_pb2.ListNodesResponse = await admin_pb2_grpc.AdminStub(channel).ListNodes(
                admin_pb2.ListNodesRequest(), timeout=2.0
            )
        return list(reply.nodes)

    async def nodes(self) -> list[str]:
        """Node ids of the Envoys streaming from this control plane."""
        return sorted(node.node_id for node in await self.list_nodes())
