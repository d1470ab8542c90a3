"""A real Kubernetes API server for benchmarks: etcd and kube-apiserver on loopback.

scripts/install-kube.sh builds both into .cache/kube/bin. Their command
lines (`etcd_command`, `apiserver_command`) and the loopback readiness probe
(`http_ok`) live here for tests/kube_apiserver.py too, which starts the same
pair for the tests: bench/ must not import tests/, tests may import bench/.
There is no controller-manager: nothing creates EndpointSlices, and the
benchmark writes them itself.

Two ways to write an object:

- `KubeApi`: through the API server, as a user or a controller does, over
  one kept-alive HTTPS connection (a new TLS handshake per write would be
  timed as part of the write).
- `Etcd.put_many`: straight into etcd, past the API server's validation,
  for the one thing validation refuses that a loopback benchmark needs
  (EndpointSlices with 127.0.0.1 addresses) and for bulk setup (10k objects
  in seconds, not minutes). The API server still serves and watches them.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bench.procs import LOOPBACK, Child, free_port

BIN: Final = Path(__file__).resolve().parent.parent / ".cache" / "kube" / "bin"
START_TIMEOUT_SECONDS: Final = 90.0
SERVICE_CLUSTER_IP_RANGE: Final = "10.96.0.0/16"
ADMIN_GROUP: Final = "system:masters"
# etcd refuses a transaction with more operations than this (its default).
_MAX_TXN_OPS: Final = 128


def missing() -> str | None:
    """None when etcd and kube-apiserver are built, else what to run."""
    absent = [name for name in ("etcd", "kube-apiserver") if not os.access(BIN / name, os.X_OK)]
    if absent:
        return f"{', '.join(absent)} not built: run scripts/install-kube.sh (make test-deps)"
    return None


# The serving certificate is self-signed and only exists once the server runs;
# readiness is polled before there is one to trust, over loopback only.
def unverified_tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


LOOPBACK_OPENER: Final = urllib.request.build_opener(
    urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=unverified_tls())
)


def http_ok(url: str, *, token: str | None = None) -> bool:
    """Whether `url` (etcd's /health, the API server's /readyz) answers 200 now."""
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with LOOPBACK_OPENER.open(request, timeout=2.0) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def etcd_command(
    etcd: Path, *, name: str, data_dir: Path, client_port: int, peer_port: int
) -> list[str]:
    """A one-member etcd on loopback, its client API on `client_port`."""
    client = f"http://{LOOPBACK}:{client_port}"
    peer = f"http://{LOOPBACK}:{peer_port}"
    return [
        str(etcd),
        f"--name={name}",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster={name}={peer}",
        # The data need not survive a power cut; fsync is most of etcd's
        # latency, which would only be added to every write measured.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver_command(
    apiserver: Path, *, workdir: Path, etcd_port: int, port: int, admin_token: str
) -> list[str]:
    """kube-apiserver on loopback as a real cluster has it: TLS, tokens, RBAC.

    Writes what it needs into `workdir` first: the token file (`admin_token`
    in ADMIN_GROUP) and the service-account key pair. kube-apiserver makes
    its own self-signed serving certificate in workdir/certs.
    """
    tokens = workdir / "tokens.csv"
    tokens.write_text(f'{admin_token},admin,admin,"{ADMIN_GROUP}"\n')
    tokens.chmod(0o600)
    signing_key, public_key = _service_account_keys(workdir)
    return [
        str(apiserver),
        f"--etcd-servers=http://{LOOPBACK}:{etcd_port}",
        f"--bind-address={LOOPBACK}",
        f"--advertise-address={LOOPBACK}",
        f"--secure-port={port}",
        f"--cert-dir={workdir / 'certs'}",
        f"--token-auth-file={tokens}",
        "--authorization-mode=RBAC",
        "--anonymous-auth=false",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={public_key}",
        f"--service-account-signing-key-file={signing_key}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        # Nothing here runs pods; the Endpoints of the `kubernetes` Service
        # would only be rewritten for nothing.
        "--endpoint-reconciler-type=none",
        # Ends open watches when stopping: otherwise the HTTP server waits
        # (up to a minute) for clients to hang up, and a restart is slow.
        "--shutdown-watch-termination-grace-period=2s",
        "--profiling=false",
        "--v=1",
    ]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class Etcd:
    """etcd's JSON gateway on one kept-alive connection."""

    port: int
    _connection: http.client.HTTPConnection | None = None

    def call(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if self._connection is None:
            self._connection = http.client.HTTPConnection(LOOPBACK, self.port, timeout=10)
        self._connection.request(
            "POST", path, json.dumps(body), {"Content-Type": "application/json"}
        )
        response = self._connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"etcd {path}: {response.status} {data[:500]!r}")
        reply: dict[str, Any] = json.loads(data)
        return reply

    def put_many(self, items: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Store (resource, object) pairs, e.g. ("endpointslices", slice), in few transactions.

        `resource` is the etcd key's collection under /registry, as the API
        server names it ("services/specs", "endpointslices", "ingress").
        """
        for start in range(0, len(items), _MAX_TXN_OPS):
            puts = [
                {
                    "requestPut": {
                        "key": _b64(_key(resource, obj)),
                        "value": _b64(json.dumps(obj)),
                    }
                }
                for resource, obj in items[start : start + _MAX_TXN_OPS]
            ]
            self.call("/v3/kv/txn", {"success": puts})

    def delete_range(self, first: str, end: str) -> None:
        """Delete every key from `first` up to (not including) `end`."""
        self.call("/v3/kv/deleterange", {"key": _b64(first), "range_end": _b64(end)})

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _key(resource: str, obj: Mapping[str, Any]) -> str:
    metadata = obj["metadata"]
    return f"/registry/{resource}/{metadata['namespace']}/{metadata['name']}"


class ApiError(RuntimeError):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"API server answered {status}: {text[:500]}")
        self.status = status


@dataclass
class KubeApi:
    """The API server's REST API as the admin, on one kept-alive HTTPS connection."""

    port: int
    token: str
    _connection: http.client.HTTPSConnection | None = None

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = http.client.HTTPSConnection(
                    LOOPBACK, self.port, timeout=30, context=unverified_tls()
                )
            try:
                self._connection.request(
                    method,
                    path,
                    None if body is None else json.dumps(body),
                    {
                        "Authorization": f"Bearer {self.token}",
                        "Content-Type": "application/json",
                        "Accept": "application/json",
                    },
                )
                response = self._connection.getresponse()
                data = response.read()
            except (http.client.HTTPException, ConnectionError):
                # The server may close an idle kept-alive connection: reconnect once.
                self.close()
                if attempt == 2:
                    raise
                continue
            if response.status >= 300:
                raise ApiError(response.status, data.decode(errors="replace"))
            return json.loads(data) if data else None
        raise AssertionError("unreachable")

    def create(self, collection: str, obj: Mapping[str, Any]) -> Any:
        """POST `obj` to a collection path, e.g. /api/v1/namespaces/bench/services."""
        return self.request("POST", collection, obj)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class LocalApiServer:
    """etcd + kube-apiserver on 127.0.0.1, state in `workdir`; stop() always."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.port = free_port()
        self.admin_token = secrets.token_urlsafe(32)
        self._children: list[Child] = []
        self._etcd: Etcd | None = None
        self._api: KubeApi | None = None

    @property
    def etcd(self) -> Etcd:
        if self._etcd is None:
            self._etcd = Etcd(self.etcd_port)
        return self._etcd

    @property
    def api(self) -> KubeApi:
        if self._api is None:
            self._api = KubeApi(self.port, self.admin_token)
        return self._api

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        etcd = self._spawn(
            "etcd",
            etcd_command(
                BIN / "etcd",
                name="bench",
                data_dir=self.workdir / "etcd",
                client_port=self.etcd_port,
                peer_port=self.etcd_peer_port,
            ),
        )
        self._wait(etcd, lambda: http_ok(f"http://{LOOPBACK}:{self.etcd_port}/health"))
        apiserver = self._spawn(
            "kube-apiserver",
            apiserver_command(
                BIN / "kube-apiserver",
                workdir=self.workdir,
                etcd_port=self.etcd_port,
                port=self.port,
                admin_token=self.admin_token,
            ),
        )
        self._wait(
            apiserver,
            lambda: http_ok(f"https://{LOOPBACK}:{self.port}/readyz", token=self.admin_token),
        )

    def _spawn(self, name: str, argv: list[str]) -> Child:
        child = Child.spawn(name, argv, log_path=self.workdir / f"{name}.log")
        self._children.append(child)
        return child

    def _wait(self, child: Child, ready: Any) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not ready():
            child.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{child.name} not ready after {START_TIMEOUT_SECONDS:g} s")
            time.sleep(0.1)

    def admin_kubeconfig(self) -> Path:
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "bench",
                    "cluster": {
                        "server": f"https://{LOOPBACK}:{self.port}",
                        # kube-apiserver's self-signed serving certificate and its CA.
                        "certificate-authority": str(self.workdir / "certs" / "apiserver.crt"),
                    },
                }
            ],
            "users": [{"name": "admin", "user": {"token": self.admin_token}}],
            "contexts": [{"name": "admin", "context": {"cluster": "bench", "user": "admin"}}],
            "current-context": "admin",
        }
        path = self.workdir / "admin.kubeconfig"
        path.write_text(yaml.safe_dump(document))
        path.chmod(0o600)  # it holds a bearer token
        return path

    def stop(self) -> None:
        for client in (self._api, self._etcd):
            if client is not None:
                client.close()
        for child in reversed(self._children):
            child.stop(grace_seconds=10.0)
        self._children.clear()


def _service_account_keys(workdir: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_path = workdir / "service-account.key"
    public_path = workdir / "service-account.pub"
    private_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    private_path.chmod(0o600)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path
