"""TLS: new-connection handshakes per second and bulk throughput through the TLS listener,
against this machine's own `openssl speed` for the same key type and cipher.

Subject: the Envoy xds-ingress configured (folder source: one Service, its
EndpointSlice naming the grpc-go interop server, a kubernetes.io/tls Secret
with a fresh self-signed certificate for the host, an Ingress with `tls`
for it), `--concurrency 1`, pinned with the backend to CPU 1; h2load, the
TLS client, on CPU 0.

- Handshakes: h2load opens K new connections (`-c K -n K -m 1`: one call
  each, so every connection is a full handshake; h2load resumes no
  sessions), and the rate is K over h2load's elapsed time. Envoy's CPU time
  over the same interval gives handshakes per Envoy CPU-second.
- Bulk: one connection, 4 calls in flight, each reply 256 KiB, for a fixed
  time: bytes per second through TLS, and Envoy's CPU per GiB.

Yardsticks, measured in the same run on CPU 1 (Envoy's core): `openssl
speed` private-key operations per second for the certificate's key type
(the work a full handshake must do at least once; ECDHE adds more), and
its bytes per second for the negotiated cipher (16 KiB blocks, one core).
Issue 7 sets no number for TLS; the ratios are reported.
"""

from __future__ import annotations

import base64
import datetime
import os
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import psutil
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from bench import envoy, folder_stack, h2load
from bench.data_plane import HOST, backend_objects
from bench.procs import (
    LOOPBACK,
    Child,
    repo_tool,
    spawn_interop_server,
    wait_until_accepting,
)
from bench.results import CaseResult, MetricSpec, TargetResult

NAME: Final = "tls"
LOAD_CPU: Final = (0,)
SERVER_CPU: Final = (1,)
KEY_TYPES: Final = ("ecdsa-p256", "rsa-2048")
QUICK_KEY_TYPES: Final = ("ecdsa-p256",)
HANDSHAKES: Final = 3000
QUICK_HANDSHAKES: Final = 500
BULK_REPLY_BYTES: Final = 256 * 1024
BULK_STREAMS: Final = 4
SECRET_NAME: Final = "grpc-backend-tls"
UNARY_PATH: Final = "/grpc.testing.TestService/UnaryCall"
MIB: Final = 1024 * 1024
# `openssl speed` names: the algorithm for a key type, the EVP cipher for a
# TLS cipher suite as h2load prints it.
_SPEED_KEY: Final = {"ecdsa-p256": "ecdsap256", "rsa-2048": "rsa2048"}
_SPEED_CIPHER: Final = {
    "TLS_AES_128_GCM_SHA256": "aes-128-gcm",
    "TLS_AES_256_GCM_SHA384": "aes-256-gcm",
    "TLS_CHACHA20_POLY1305_SHA256": "chacha20-poly1305",
    "ECDHE-ECDSA-AES128-GCM-SHA256": "aes-128-gcm",
    "ECDHE-RSA-AES128-GCM-SHA256": "aes-128-gcm",
    "ECDHE-ECDSA-AES256-GCM-SHA384": "aes-256-gcm",
    "ECDHE-RSA-AES256-GCM-SHA384": "aes-256-gcm",
}

METRICS: Final[Mapping[str, MetricSpec]] = {
    "handshake_ratio": MetricSpec(
        "x", "handshakes per Envoy CPU-second / openssl private-key ops per second"
    ),
    "handshakes_per_s": MetricSpec("conns/s", "new TLS connections per second (wall)"),
    "handshakes_per_envoy_cpu_s": MetricSpec("conns", "handshakes per Envoy CPU-second"),
    "openssl_sign_per_s": MetricSpec("ops/s", "openssl speed: private-key ops per second"),
    "handshake_errors": MetricSpec("calls", "failed calls on new connections"),
    "bulk_ratio": MetricSpec("x", "bulk MiB/s through TLS / openssl speed of the cipher"),
    "bulk_mib_per_s": MetricSpec("MiB/s", "bulk bytes through the TLS listener per second"),
    "openssl_cipher_mib_per_s": MetricSpec("MiB/s", "openssl speed of the cipher, 16 KiB"),
    "envoy_cpu_s_per_gib": MetricSpec("s", "Envoy CPU seconds per GiB of bulk replies"),
    "bulk_errors": MetricSpec("calls", "failed bulk calls"),
}


def _private_key(key_type: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if key_type == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise ValueError(f"unknown key type {key_type!r}")


def self_signed(host: str, key_type: str) -> tuple[bytes, bytes]:
    """(certificate PEM, key PEM) for `host`, valid for a day either side of now."""
    key = _private_key(key_type)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def tls_objects(backend_port: int, key_type: str) -> str:
    """The data-plane's Service, slice and Ingress, plus a TLS Secret and the Ingress's tls."""
    documents = list(yaml.safe_load_all(backend_objects(backend_port)))
    cert_pem, key_pem = self_signed(HOST, key_type)
    for document in documents:
        if document["kind"] == "Ingress":
            document["spec"]["tls"] = [{"hosts": [HOST], "secretName": SECRET_NAME}]
            namespace = document["metadata"]["namespace"]
    documents.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": {"name": SECRET_NAME, "namespace": namespace},
            "data": {
                "tls.crt": base64.b64encode(cert_pem).decode(),
                "tls.key": base64.b64encode(key_pem).decode(),
            },
        }
    )
    return yaml.safe_dump_all(documents, sort_keys=False)


def openssl_speed(*args: str) -> str:
    """`openssl speed -mr` on the server's core; its machine-readable lines."""
    pinned = set(SERVER_CPU)

    def pin() -> None:
        os.sched_setaffinity(0, pinned)

    completed = subprocess.run(
        ["openssl", "speed", "-mr", "-seconds", "1", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        preexec_fn=pin,
    )
    return completed.stdout


def sign_per_second(key_type: str) -> float:
    text = openssl_speed(_SPEED_KEY[key_type])
    # +F2:<i>:<bits>:<sign/s>:<verify/s> (RSA), +F4:… (ECDSA)
    match = re.search(r"^\+F[24]:\d+:\d+:([\d.]+):([\d.]+)$", text, re.M)
    if match is None:
        raise ValueError(f"unexpected openssl speed output: {text[-500:]}")
    return float(match.group(1))


def cipher_bytes_per_second(cipher: str) -> float:
    text = openssl_speed("-bytes", "16384", "-evp", cipher)
    match = re.search(r"^\+F:\d+:[^:]+:([\d.]+)$", text, re.M)
    if match is None:
        raise ValueError(f"unexpected openssl speed output: {text[-500:]}")
    return float(match.group(1))


def _cpu_seconds(child: Child) -> float:
    try:
        times = psutil.Process(child.pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


@dataclass
class TlsCase:
    key_type: str
    handshakes: int
    bulk_seconds: float
    _children: list[Child] = field(default_factory=list)
    _envoy: Child | None = None
    _address: str = ""
    _small: Path | None = None
    _bulk: Path | None = None
    _cipher: str = ""

    @property
    def label(self) -> str:
        return self.key_type

    @property
    def params(self) -> Mapping[str, Any]:
        return {
            "key_type": self.key_type,
            "handshakes_per_run": self.handshakes,
            "bulk_seconds": self.bulk_seconds,
            "bulk_reply_bytes": BULK_REPLY_BYTES,
            "bulk_streams": BULK_STREAMS,
            "envoy_concurrency": 1,
            "load_cpus": list(LOAD_CPU),
            "server_cpus": list(SERVER_CPU),
        }

    def _spawn(self, child: Child) -> Child:
        self._children.append(child)
        return child

    def prepare(self, workdir: Path) -> dict[str, Any]:
        backend, backend_port = spawn_interop_server(workdir / "backend.log", cpus=SERVER_CPU)
        self._spawn(backend)
        wait_until_accepting(backend, backend_port, within_seconds=30)
        stack = folder_stack.start(
            workdir,
            objects_yaml=tls_objects(backend_port, self.key_type),
            node_id="bench-tls",
            # HTTP and HTTPS listeners; the backend's cluster and xds_cluster.
            expected=envoy.Expected(clusters=2, listeners=2),
            register=self._spawn,
            control_plane_cpus=LOAD_CPU,
            envoy_cpus=SERVER_CPU,
        )
        self._envoy = stack.envoy
        self._address = f"{LOOPBACK}:{stack.ports.https}"
        self._small = workdir / "small.grpc"
        self._small.write_bytes(h2load.unary_request_frame(16))
        self._bulk = workdir / "bulk.grpc"
        self._bulk.write_bytes(h2load.unary_request_frame(16, response_size=BULK_REPLY_BYTES))
        check = self._load(clients=2, requests=10, body=self._small, streams=1, seconds=10)
        if check.ok != 10:
            raise RuntimeError(f"calls through the TLS listener failed: {check}")
        self._cipher = check.cipher
        if self._cipher not in _SPEED_CIPHER:
            raise RuntimeError(f"no openssl speed name for the cipher {self._cipher!r}")
        return {"cipher": self._cipher, "openssl_cipher": _SPEED_CIPHER[self._cipher]}

    def _load(
        self, *, clients: int, requests: int, body: Path, streams: int, seconds: float
    ) -> h2load.H2loadResult:
        for child in self._children:
            child.check_alive()
        return h2load.run(
            address=self._address,
            authority=HOST,
            path=UNARY_PATH,
            body=body,
            seconds=seconds,
            clients=clients,
            streams_per_client=streams,
            tls=True,
            requests=requests,
            cpus=LOAD_CPU,
        )

    def close(self) -> None:
        for child in reversed(self._children):
            child.stop()
        self._children.clear()
        self._envoy = None

    def run_once(self, index: int, workdir: Path) -> dict[str, float]:
        assert self._envoy is not None and self._small is not None and self._bulk is not None
        sample: dict[str, float] = {}
        sample["openssl_sign_per_s"] = sign_per_second(self.key_type)
        before = _cpu_seconds(self._envoy)
        shaken = self._load(
            clients=self.handshakes,
            requests=self.handshakes,
            body=self._small,
            streams=1,
            seconds=120,
        )
        cpu = _cpu_seconds(self._envoy) - before
        sample["handshakes_per_s"] = shaken.ok / shaken.elapsed_s
        sample["handshakes_per_envoy_cpu_s"] = shaken.ok / cpu if cpu else float("nan")
        sample["handshake_ratio"] = (
            sample["handshakes_per_envoy_cpu_s"] / sample["openssl_sign_per_s"]
        )
        sample["handshake_errors"] = shaken.failed
        time.sleep(0.5)
        cipher = cipher_bytes_per_second(_SPEED_CIPHER[self._cipher])
        sample["openssl_cipher_mib_per_s"] = cipher / MIB
        before = _cpu_seconds(self._envoy)
        bulk = self._load(
            clients=1, requests=0, body=self._bulk, streams=BULK_STREAMS, seconds=self.bulk_seconds
        )
        cpu = _cpu_seconds(self._envoy) - before
        sample["bulk_mib_per_s"] = bulk.bytes_total / bulk.elapsed_s / MIB
        sample["bulk_ratio"] = sample["bulk_mib_per_s"] / sample["openssl_cipher_mib_per_s"]
        if bulk.bytes_total:
            sample["envoy_cpu_s_per_gib"] = cpu / (bulk.bytes_total / (1024 * MIB))
        sample["bulk_errors"] = bulk.failed
        time.sleep(0.5)
        return sample


class Tls:
    name = NAME
    title = "TLS: handshakes and bulk throughput through the TLS listener vs openssl speed"

    @property
    def metrics(self) -> Mapping[str, MetricSpec]:
        return METRICS

    def cases(self, *, quick: bool) -> Sequence[TlsCase]:
        if quick:
            return [
                TlsCase(k, handshakes=QUICK_HANDSHAKES, bulk_seconds=2) for k in QUICK_KEY_TYPES
            ]
        return [TlsCase(k, handshakes=HANDSHAKES, bulk_seconds=5) for k in KEY_TYPES]

    def available(self) -> str | None:
        if repo_tool("grpc-interop-server") is None:
            return "grpc-interop-server not built: run bench/install-deps.sh"
        for tool in ("h2load", "openssl"):
            if not any(
                os.access(Path(folder) / tool, os.X_OK)
                for folder in os.environ.get("PATH", "").split(os.pathsep)
            ):
                return f"{tool} not installed (bench/install-deps.sh)"
        if len(os.sched_getaffinity(0)) < 2:
            return "needs 2 CPUs (one for the load, one for Envoy)"
        return None

    def targets(self, cases: Sequence[CaseResult]) -> list[TargetResult]:
        # Issue 7 names the yardstick (openssl speed) but no threshold.
        return []
