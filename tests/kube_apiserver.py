"""A real Kubernetes API server for tests: etcd and kube-apiserver on loopback.

`scripts/install-kube.sh` (run by `make test-deps`) builds both into
.cache/kube/bin. The session fixture `kube_cluster` starts them once per test
run, on ports picked here, with what a real cluster has and a test can trip
over: TLS (kube-apiserver's own self-signed certificate), token
authentication, RBAC, and service-account tokens (so a test can run the
control plane with exactly the permissions it will get in a cluster). The
two command lines are bench/kube.py's: the benchmarks start the same pair.
There is no controller-manager: nothing creates EndpointSlices, and a
deleted namespace stays Terminating; tests write EndpointSlices themselves
and use a fresh namespace each (`kube_namespace`).

With KUBECONFIG set, the fixture uses that cluster instead and starts
nothing, so the same tests run against any real cluster. They create only
uniquely named objects and delete them afterwards.

The fixtures reach every test module through this line in conftest.py:
    pytest_plugins = ["kube_apiserver"]
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import pytest
import yaml
from kubernetes import client as kube
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from peers import LOOPBACK, REPO, MissingTestDependency, free_port

from bench.kube import LOOPBACK_OPENER, apiserver_command, etcd_command, http_ok

BIN: Final = REPO / ".cache" / "kube" / "bin"
# The standard-channel Gateway API CRDs, copied there by scripts/install-kube.sh.
GATEWAY_API_CRDS: Final = REPO / ".cache" / "kube" / "gateway-api-crds"
CRD_TIMEOUT_SECONDS: Final = 60.0
START_TIMEOUT_SECONDS: Final = 60.0
STOP_TIMEOUT_SECONDS: Final = 10.0


def gateway_api_crds() -> list[dict[str, Any]]:
    """The pinned Gateway API CRDs (standard channel), as documents."""
    files = sorted(GATEWAY_API_CRDS.glob("*.yaml"))
    if not files:
        raise MissingTestDependency(
            f"no Gateway API CRDs in {GATEWAY_API_CRDS}: run `make test-deps` "
            "(scripts/install-kube.sh downloads them)"
        )
    documents = []
    for path in files:
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("kind") == "CustomResourceDefinition":
                documents.append(document)
    return documents


def kube_binary(name: str) -> Path:
    path = BIN / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise MissingTestDependency(
            f"{name} is not installed at {path}: run `make test-deps` "
            "(scripts/install-kube.sh builds etcd and kube-apiserver), "
            "or set KUBECONFIG to run against a real cluster"
        )
    return path


# ---------------------------------------------------------------- kubeconfig


def write_kubeconfig(
    path: Path, *, cluster: Mapping[str, Any], user: Mapping[str, Any], name: str
) -> Path:
    """A one-context kubeconfig: `cluster` as kubeconfig spells it, `user` its credentials."""
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": dict(cluster)}],
        "users": [{"name": name, "user": dict(user)}],
        "contexts": [{"name": name, "context": {"cluster": "test", "user": name}}],
        "current-context": name,
    }
    path.write_text(yaml.safe_dump(document))
    path.chmod(0o600)  # it holds a bearer token
    return path


def _current_cluster(kubeconfig: Path) -> dict[str, Any]:
    """The cluster entry of the current context, with file paths made absolute."""
    _contexts, current = kube_config.list_kube_config_contexts(config_file=str(kubeconfig))
    name = current["context"]["cluster"]
    document = yaml.safe_load(kubeconfig.read_text())
    for entry in document.get("clusters") or ():
        if entry.get("name") == name:
            cluster = dict(entry["cluster"])
            authority = cluster.get("certificate-authority")
            if authority and not Path(authority).is_absolute():
                cluster["certificate-authority"] = str(kubeconfig.parent / authority)
            return cluster
    raise ValueError(f"{kubeconfig}: no cluster {name!r} for context {current['name']!r}")


# ---------------------------------------------------------------- the cluster


@dataclass
class KubeCluster:
    """What tests get: an admin kubeconfig, and ways to make least-privilege ones."""

    kubeconfig: Path
    workdir: Path
    # None when KUBECONFIG names another cluster: etcd and restarts are
    # then out of reach, and tests that need them skip.
    local: LocalApiServer | None
    _clients: list[kube.ApiClient] = field(default_factory=list)

    def api_client(self, kubeconfig: Path | None = None) -> kube.ApiClient:
        """A client for the admin (or the given kubeconfig); closed at session end."""
        configuration = kube.Configuration()
        kube_config.load_kube_config(
            config_file=str(kubeconfig or self.kubeconfig),
            client_configuration=configuration,
            persist_config=False,
        )
        api_client = kube.ApiClient(configuration)
        self._clients.append(api_client)
        return api_client

    def service_account_kubeconfig(
        self,
        *,
        namespace: str,
        name: str,
        rules: Sequence[Mapping[str, Any]],
        expiration_seconds: int = 3600,
    ) -> Path:
        """A kubeconfig for a new ServiceAccount allowed exactly `rules`, cluster-wide.

        Creates the ServiceAccount, a ClusterRole `name` with `rules` and its
        ClusterRoleBinding, and asks the TokenRequest API for a token, the
        way a pod gets one. Change the permissions later with
        `set_cluster_role_rules`; `delete_cluster_role` cleans up.
        """
        api_client = self.api_client()
        core = kube.CoreV1Api(api_client)
        rbac = kube.RbacAuthorizationV1Api(api_client)
        core.create_namespaced_service_account(namespace, {"metadata": {"name": name}})
        rbac.create_cluster_role({"metadata": {"name": name}, "rules": list(rules)})
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": name},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": name,
                },
                "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
            }
        )
        token_request = core.create_namespaced_service_account_token(
            name, namespace, {"spec": {"expirationSeconds": expiration_seconds}}
        )
        path = self.workdir / f"{namespace}-{name}.kubeconfig"
        return write_kubeconfig(
            path,
            cluster=_current_cluster(self.kubeconfig),
            user={"token": token_request.status.token},
            name=name,
        )

    def set_cluster_role_rules(self, name: str, rules: Sequence[Mapping[str, Any]]) -> None:
        rbac = kube.RbacAuthorizationV1Api(self.api_client())
        rbac.patch_cluster_role(name, {"rules": list(rules)})

    def delete_cluster_role(self, name: str) -> None:
        """Remove what service_account_kubeconfig made cluster-wide (the rest is namespaced)."""
        rbac = kube.RbacAuthorizationV1Api(self.api_client())
        for delete in (rbac.delete_cluster_role_binding, rbac.delete_cluster_role):
            with contextlib.suppress(ApiException):
                delete(name)

    def install_gateway_api_crds(self) -> None:
        """Create the Gateway API CRDs (those missing) and wait until each is served."""
        try:
            crds = gateway_api_crds()
        except MissingTestDependency as error:
            pytest.fail(str(error), pytrace=False)
        api_client = self.api_client()
        extensions = kube.ApiextensionsV1Api(api_client)
        for crd in crds:
            try:
                extensions.create_custom_resource_definition(crd)
            except ApiException as error:
                if error.status != 409:  # already there
                    raise
        deadline = time.monotonic() + CRD_TIMEOUT_SECONDS
        for crd in crds:
            while not self._crd_served(api_client, crd):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"CRD {crd['metadata']['name']} is not served")
                time.sleep(0.1)

    def delete_gateway_api_crds(self) -> None:
        """Delete the Gateway API CRDs (and so every object of theirs); wait until gone."""
        try:
            crds = gateway_api_crds()
        except MissingTestDependency as error:
            pytest.fail(str(error), pytrace=False)
        extensions = kube.ApiextensionsV1Api(self.api_client())
        names = [str(crd["metadata"]["name"]) for crd in crds]
        for name in names:
            try:
                extensions.delete_custom_resource_definition(name)
            except ApiException as error:
                if error.status != 404:
                    raise
        deadline = time.monotonic() + CRD_TIMEOUT_SECONDS
        for name in names:
            while True:
                try:
                    extensions.read_custom_resource_definition(name)
                except ApiException as error:
                    if error.status == 404:
                        break
                    raise
                if time.monotonic() > deadline:
                    raise TimeoutError(f"CRD {name} is still there")
                time.sleep(0.1)

    @staticmethod
    def _crd_served(api_client: kube.ApiClient, crd: Mapping[str, Any]) -> bool:
        """Established, and a list of every served version answers 200."""
        spec = crd["spec"]
        extensions = kube.ApiextensionsV1Api(api_client)
        try:
            current = extensions.read_custom_resource_definition(crd["metadata"]["name"])
        except ApiException:
            return False
        conditions = (current.status and current.status.conditions) or []
        if not any(c.type == "Established" and c.status == "True" for c in conditions):
            return False
        custom = kube.CustomObjectsApi(api_client)
        for version in spec["versions"]:
            if not version.get("served"):
                continue
            try:
                custom.list_cluster_custom_object(
                    spec["group"], version["name"], spec["names"]["plural"], limit=1
                )
            except ApiException:
                return False
        return True

    def close(self) -> None:
        for api_client in self._clients:
            api_client.close()
        self._clients.clear()


# ---------------------------------------------------------------- local processes


@dataclass
class _Process:
    name: str
    command: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self._log.write(f"=== {' '.join(self.command)}\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own process group: a Ctrl-C at the terminal reaches pytest,
            # which then stops this cleanly, instead of killing it mid-write.
            start_new_session=True,
        )

    def check_running(self) -> None:
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise RuntimeError(
                f"{self.name} exited (status {code}); log {self.log_path} ends:\n{self.log_tail()}"
            )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class LocalApiServer:
    """etcd + kube-apiserver on 127.0.0.1, state in `workdir`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.etcd_port = free_port()
        self.etcd_peer_port = free_port()
        self.port = free_port()
        self.admin_token = secrets.token_urlsafe(32)
        self.etcd = _Process(
            name="etcd",
            command=etcd_command(
                kube_binary("etcd"),
                name="test",
                data_dir=workdir / "etcd",
                client_port=self.etcd_port,
                peer_port=self.etcd_peer_port,
            ),
            log_path=workdir / "etcd.log",
        )
        self.apiserver = _Process(
            name="kube-apiserver",
            command=[],  # needs the keys first; see start()
            log_path=workdir / "kube-apiserver.log",
        )

    @property
    def server(self) -> str:
        return f"https://{LOOPBACK}:{self.port}"

    @property
    def certificate(self) -> Path:
        # What kube-apiserver writes into --cert-dir when given no certificate:
        # the serving certificate followed by the CA that signed it.
        return self.workdir / "certs" / "apiserver.crt"

    def start(self) -> None:
        self.etcd.start()
        _wait(
            lambda: http_ok(f"http://{LOOPBACK}:{self.etcd_port}/health"),
            what="etcd /health",
            process=self.etcd,
        )
        self.apiserver.command = apiserver_command(
            kube_binary("kube-apiserver"),
            workdir=self.workdir,
            etcd_port=self.etcd_port,
            port=self.port,
            admin_token=self.admin_token,
        )
        self.start_apiserver()

    def start_apiserver(self) -> None:
        """Start (or, after stop_apiserver, restart) kube-apiserver; etcd keeps the data."""
        self.apiserver.start()
        self.wait_ready()

    def stop_apiserver(self) -> None:
        self.apiserver.stop()

    def wait_ready(self) -> None:
        _wait(
            lambda: http_ok(f"{self.server}/readyz", token=self.admin_token),
            what="kube-apiserver /readyz",
            process=self.apiserver,
        )

    # etcd, straight: for what the API refuses or cannot do on request.

    def write_unvalidated(self, *, resource: str, obj: Mapping[str, Any]) -> None:
        """Store `obj` in etcd directly, past the API server's validation.

        For the one thing a loopback-only test needs that validation refuses:
        EndpointSlices with 127.0.0.1 addresses (the backends here listen on
        loopback; in a cluster they would be pod IPs). The API server then
        serves, watches and deletes it like any other object. `resource` is
        the etcd key's collection, as in "endpointslices" or "services/specs".
        """
        metadata = obj["metadata"]
        key = f"/registry/{resource}/{metadata['namespace']}/{metadata['name']}"
        self._etcd("/v3/kv/put", {"key": _b64(key), "value": _b64(json.dumps(obj))})

    def delete_unvalidated(self, *, resource: str, namespace: str, name: str) -> None:
        """Delete an object in etcd directly, which the API server cannot do while down."""
        self._etcd("/v3/kv/deleterange", {"key": _b64(f"/registry/{resource}/{namespace}/{name}")})

    def compact_etcd(self) -> int:
        """Drop etcd's history up to now: older resourceVersions can no longer be watched."""
        revision = int(self._etcd("/v3/kv/range", {"key": _b64("/")})["header"]["revision"])
        self._etcd("/v3/kv/compaction", {"revision": revision, "physical": True})
        return revision

    def _etcd(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """One call to etcd's JSON gateway."""
        request = urllib.request.Request(
            f"http://{LOOPBACK}:{self.etcd_port}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with LOOPBACK_OPENER.open(request, timeout=5.0) as response:
            reply: dict[str, Any] = json.loads(response.read())
        return reply

    def stop(self) -> None:
        errors: list[BaseException] = []
        for process in (self.apiserver, self.etcd):
            try:
                process.stop()
            except BaseException as error:  # stop the other one anyway
                errors.append(error)
        if errors:
            raise errors[0]

    def admin_kubeconfig(self) -> Path:
        return write_kubeconfig(
            self.workdir / "admin.kubeconfig",
            cluster={"server": self.server, "certificate-authority": str(self.certificate)},
            user={"token": self.admin_token},
            name="admin",
        )


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _wait(condition: Any, *, what: str, process: _Process) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        process.check_running()
        if condition():
            return
        time.sleep(0.1)
    raise TimeoutError(
        f"{what} not ready after {START_TIMEOUT_SECONDS:g} s; "
        f"log {process.log_path} ends:\n{process.log_tail()}"
    )


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def local_apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalApiServer | None]:
    """The local etcd + kube-apiserver, or None when KUBECONFIG names another cluster."""
    if os.environ.get("KUBECONFIG"):
        yield None
        return
    try:
        kube_binary("etcd")
        kube_binary("kube-apiserver")
        server = LocalApiServer(tmp_path_factory.mktemp("kube-apiserver"))
    except MissingTestDependency as error:
        pytest.fail(str(error), pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kube_cluster(
    local_apiserver: LocalApiServer | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KubeCluster]:
    """An API server to test against, and an admin kubeconfig for it."""
    if local_apiserver is None:
        kubeconfig = Path(os.environ["KUBECONFIG"].split(os.pathsep)[0])
        cluster = KubeCluster(
            kubeconfig=kubeconfig, workdir=tmp_path_factory.mktemp("kube"), local=None
        )
    else:
        cluster = KubeCluster(
            kubeconfig=local_apiserver.admin_kubeconfig(),
            workdir=local_apiserver.workdir,
            local=local_apiserver,
        )
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def kube_namespace(kube_cluster: KubeCluster) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    name = f"xds-test-{secrets.token_hex(4)}"
    core = kube.CoreV1Api(kube_cluster.api_client())
    core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        with contextlib.suppress(ApiException):
            core.delete_namespace(name)
