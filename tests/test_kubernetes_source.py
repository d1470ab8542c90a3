"""The Kubernetes source against a real API server and a real Envoy.

The API server is tests/kube_apiserver.py's (etcd + kube-apiserver on
loopback, RBAC on); the control plane runs with a ServiceAccount token that
may only list and watch what it reads, as it would in a cluster. Objects are
written with the `kubernetes` client as an operator would, except
EndpointSlices: the API refuses loopback addresses, and every backend here
listens on 127.0.0.1, so those are stored through etcd (see
LocalApiServer.write_unvalidated) and the tests that need them skip
against a cluster named by KUBECONFIG.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from kube_apiserver import KubeCluster, LocalApiServer
from kubernetes import client as kube
from kubernetes.client.exceptions import ApiException
from peers import BackendFactory, EnvoyFactory, EnvoyProcess, free_port, say_hello, wait_until

from xds_ingress.app import ControlPlane
from xds_ingress.bootstrap import render_bootstrap
from xds_ingress.cache import DEFAULT_GROUP
from xds_ingress.cli import main
from xds_ingress.resources import types
from xds_ingress.settings import KUBERNETES_SOURCE, HostPort, ServeSettings
from xds_ingress.sources.backoff import Backoff
from xds_ingress.sources.kube_client import load_configuration
from xds_ingress.sources.kubernetes import KubernetesSource
from xds_ingress.sources.objects import SECRET, SERVICE, KubeObject, ObjectKey
from xds_ingress.store import Change, Store
from xds_ingress.translate.backends import backend_name
from xds_ingress.translate.settings import DEFAULT_CONTROLLER_NAME

pytestmark = pytest.mark.timeout(120)

GRPC_PORT = 50051

# Exactly what the Kubernetes source reads: list and watch, nothing else.
CONTROL_PLANE_RULES: tuple[Mapping[str, Any], ...] = (
    {
        "apiGroups": ["networking.k8s.io"],
        "resources": ["ingresses", "ingressclasses"],
        "verbs": ["list", "watch"],
    },
    {"apiGroups": [""], "resources": ["services", "secrets"], "verbs": ["list", "watch"]},
    # Namespace labels, for Gateway listeners' allowedRoutes selectors.
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    {
        "apiGroups": ["discovery.k8s.io"],
        "resources": ["endpointslices"],
        "verbs": ["list", "watch"],
    },
    # Without the CRDs these lists answer 404, which holds nothing up;
    # without the permission they would answer 403, which does.
    {
        "apiGroups": ["gateway.networking.k8s.io"],
        "resources": ["gatewayclasses", "gateways", "grpcroutes", "httproutes", "referencegrants"],
        "verbs": ["list", "watch"],
    },
)


def fast_backoff() -> Backoff:
    # The default starts at 0.2 s and grows to 30 s; tests restart the API
    # server and should not wait for a long step to expire.
    return Backoff(initial_seconds=0.05, max_seconds=0.5)


# ---------------------------------------------------------------- objects


@dataclass
class Objects:
    """Writes one test's objects, as the cluster admin, in `namespace`."""

    cluster: KubeCluster
    namespace: str
    _classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        api_client = self.cluster.api_client()
        self.core = kube.CoreV1Api(api_client)
        self.networking = kube.NetworkingV1Api(api_client)
        self.discovery = kube.DiscoveryV1Api(api_client)

    @property
    def local(self) -> LocalApiServer:
        if self.cluster.local is None:
            pytest.skip("loopback EndpointSlices need the local API server (KUBECONFIG is set)")
        return self.cluster.local

    def service(self, name: str) -> None:
        self.core.create_namespaced_service(self.namespace, service_body(name))

    def delete_service(self, name: str) -> None:
        self.core.delete_namespaced_service(name, self.namespace)

    def endpoint_slice(self, name: str, *, service: str, port: int, ready: bool = True) -> None:
        """One endpoint, 127.0.0.1:`port`, for `service`; creates or replaces."""
        self.local.write_unvalidated(
            resource="endpointslices",
            obj={
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": name,
                    "namespace": self.namespace,
                    "labels": {"kubernetes.io/service-name": service},
                },
                "addressType": "IPv4",
                "ports": [{"name": "grpc", "port": port, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": ready}}],
            },
        )

    def delete_endpoint_slice(self, name: str) -> None:
        self.discovery.delete_namespaced_endpoint_slice(name, self.namespace)

    def ingress_class(self, name: str, *, controller: str = DEFAULT_CONTROLLER_NAME) -> None:
        self.networking.create_ingress_class(
            {"metadata": {"name": name}, "spec": {"controller": controller}}
        )
        self._classes.append(name)

    def ingress(self, name: str, *, class_name: str, host: str, service: str) -> None:
        self.networking.create_namespaced_ingress(
            self.namespace,
            {"metadata": {"name": name}, "spec": ingress_spec(class_name, host, service)},
        )

    def repoint_ingress(self, name: str, *, class_name: str, host: str, service: str) -> None:
        self.networking.patch_namespaced_ingress(
            name, self.namespace, {"spec": ingress_spec(class_name, host, service)}
        )

    def delete_ingress(self, name: str) -> None:
        self.networking.delete_namespaced_ingress(name, self.namespace)

    def cleanup(self) -> None:
        # IngressClasses are cluster-wide; everything else goes with the namespace.
        for name in self._classes:
            with contextlib.suppress(ApiException):
                self.networking.delete_ingress_class(name)


def service_body(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "ports": [{"name": "grpc", "port": GRPC_PORT, "appProtocol": "kubernetes.io/h2c"}]
        },
    }


def ingress_spec(class_name: str, host: str, service: str) -> dict[str, Any]:
    backend = {"service": {"name": service, "port": {"name": "grpc"}}}
    return {
        "ingressClassName": class_name,
        "rules": [
            {
                "host": host,
                "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": backend}]},
            }
        ],
    }


@pytest.fixture
def objects(kube_cluster: KubeCluster, kube_namespace: str) -> Iterator[Objects]:
    made = Objects(cluster=kube_cluster, namespace=kube_namespace)
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def control_plane_kubeconfig(kube_cluster: KubeCluster, kube_namespace: str) -> Iterator[Path]:
    """A kubeconfig for a ServiceAccount allowed exactly CONTROL_PLANE_RULES."""
    name = f"xds-ingress-{kube_namespace}"
    try:
        yield kube_cluster.service_account_kubeconfig(
            namespace=kube_namespace, name=name, rules=CONTROL_PLANE_RULES
        )
    finally:
        kube_cluster.delete_cluster_role(name)


# ---------------------------------------------------------------- the ingress


@dataclass
class RunningIngress:
    control_plane: ControlPlane
    envoy: EnvoyProcess
    target: str


def serve_settings(*, kubeconfig: Path, namespace: str, http_port: int) -> ServeSettings:
    return ServeSettings(
        source=KUBERNETES_SOURCE,
        xds_address=HostPort("127.0.0.1", 0),
        listen_address="127.0.0.1",
        http_port=http_port,
        https_port=free_port(),
        holdoff_seconds=0.02,
        max_holdoff_seconds=0.2,
        kubeconfig=str(kubeconfig),
        watch_namespace=namespace,
    )


StartControlPlane = Callable[[ServeSettings], Awaitable[ControlPlane]]


@pytest.fixture
async def start_control_plane() -> AsyncIterator[StartControlPlane]:
    started: list[ControlPlane] = []

    async def start(settings: ServeSettings) -> ControlPlane:
        control_plane = ControlPlane.from_settings(settings)
        started.append(control_plane)
        await control_plane.start()
        return control_plane

    try:
        yield start
    finally:
        for control_plane in started:
            await control_plane.stop()


StartIngress = Callable[[], Awaitable[RunningIngress]]


@pytest.fixture
def start_ingress(
    control_plane_kubeconfig: Path,
    kube_namespace: str,
    start_control_plane: StartControlPlane,
    envoy_factory: EnvoyFactory,
) -> StartIngress:
    """Starts the control plane (watching the test's namespace) and an Envoy it configures.

    A test writes some objects before, so that they come in the first list,
    and some after, so that they come as watch events.
    """

    async def start() -> RunningIngress:
        http_port = free_port()
        control_plane = await start_control_plane(
            serve_settings(
                kubeconfig=control_plane_kubeconfig, namespace=kube_namespace, http_port=http_port
            )
        )
        envoy = envoy_factory(
            render_bootstrap(
                xds_address=f"127.0.0.1:{control_plane.port}",
                node_id="test-envoy",
                node_cluster="test",
                admin_address=None,
            )
        )
        await envoy.wait_ready()
        return RunningIngress(
            control_plane=control_plane, envoy=envoy, target=f"127.0.0.1:{http_port}"
        )

    return start


async def answered_by(target: str, host: str, *, calls: int = 1) -> set[str]:
    """Who answered `calls` SayHello calls to `host` ("" for a failed call)."""
    backends = set()
    for _ in range(calls):
        backend, _code = await say_hello(target, authority=host, timeout=2.0)
        backends.add(backend)
    return backends


async def routes_to(target: str, host: str, *backends: str) -> None:
    """Until calls to `host` are answered by exactly `backends`, each of them."""
    wanted = set(backends)

    async def check() -> bool:
        return await answered_by(target, host, calls=2 * len(wanted)) == wanted

    await wait_until(check, timeout=10.0, interval=0.05, message=f"{host} → {sorted(wanted)}")


async def answers(target: str, host: str, code: grpc.StatusCode) -> None:
    async def check() -> bool:
        _backend, got = await say_hello(target, authority=host, timeout=2.0)
        return got == code

    await wait_until(check, timeout=10.0, interval=0.05, message=f"{host} answers {code.name}")


# ---------------------------------------------------------------- traffic


async def test_traffic_follows_ingresses_of_our_class_only(
    objects: Objects, backend_factory: BackendFactory, start_ingress: StartIngress
) -> None:
    a, b = await backend_factory("a"), await backend_factory("b")
    for name, backend in (("greeter-a", a), ("greeter-b", b)):
        objects.service(name)
        objects.endpoint_slice(f"{name}-1", service=name, port=backend.port)
    ours, theirs = f"ours-{objects.namespace}", f"theirs-{objects.namespace}"
    objects.ingress_class(ours)
    objects.ingress_class(theirs, controller="example.com/another-controller")
    objects.ingress("main", class_name=ours, host="main.example.com", service="greeter-a")
    objects.ingress("foreign", class_name=theirs, host="foreign.example.com", service="greeter-b")

    running = await start_ingress()
    await routes_to(running.target, "main.example.com", "a")
    # Another controller's Ingress is not ours to route (no route: UNIMPLEMENTED).
    await answers(running.target, "foreign.example.com", grpc.StatusCode.UNIMPLEMENTED)

    objects.repoint_ingress("main", class_name=ours, host="main.example.com", service="greeter-b")
    await routes_to(running.target, "main.example.com", "b")

    objects.ingress("late", class_name=ours, host="late.example.com", service="greeter-a")
    await routes_to(running.target, "late.example.com", "a")

    objects.delete_ingress("main")
    await answers(running.target, "main.example.com", grpc.StatusCode.UNIMPLEMENTED)
    await routes_to(running.target, "late.example.com", "a")


async def test_calls_follow_endpoint_slices(
    objects: Objects, backend_factory: BackendFactory, start_ingress: StartIngress
) -> None:
    a, b = await backend_factory("a"), await backend_factory("b")
    objects.service("greeter")
    objects.endpoint_slice("greeter-a", service="greeter", port=a.port)
    objects.ingress_class(f"ours-{objects.namespace}")
    objects.ingress(
        "main", class_name=f"ours-{objects.namespace}", host="greeter.example", service="greeter"
    )

    running = await start_ingress()
    await routes_to(running.target, "greeter.example", "a")

    objects.endpoint_slice("greeter-b", service="greeter", port=b.port)  # scale out
    await routes_to(running.target, "greeter.example", "a", "b")

    objects.delete_endpoint_slice("greeter-a")  # scale in
    await routes_to(running.target, "greeter.example", "b")

    objects.endpoint_slice("greeter-b", service="greeter", port=b.port, ready=False)
    await answers(running.target, "greeter.example", grpc.StatusCode.UNAVAILABLE)


# ---------------------------------------------------------------- relists


class GatedSink:
    """Forwards to the store, except watch events while `closed`.

    Dropping events is what a watch that broke (or fell behind to a 410)
    did to us; the relist that follows must repair the store.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.closed = False
        self.dropped: list[ObjectKey] = []

    def apply(self, obj: KubeObject, *, origin: str) -> None:
        if self.closed:
            self.dropped.append(obj.key)
        else:
            self.store.apply(obj, origin=origin)

    def delete(self, key: ObjectKey, *, origin: str) -> None:
        if self.closed:
            self.dropped.append(key)
        else:
            self.store.delete(key, origin=origin)

    def replace_all(self, objects: Sequence[KubeObject], *, origin: str) -> None:
        self.store.replace_all(objects, origin=origin)


@contextlib.asynccontextmanager
async def running_source(
    *, kubeconfig: Path, namespace: str, sink: GatedSink | Store
) -> AsyncIterator[KubernetesSource]:
    source = KubernetesSource(
        configuration=load_configuration(kubeconfig=str(kubeconfig)),
        namespace=namespace,
        backoff=fast_backoff,
    )
    task = asyncio.create_task(source.run(sink))
    try:
        await asyncio.wait_for(source.synced.wait(), timeout=10.0)
        yield source
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def services_in(store: Store, namespace: str) -> set[str]:
    return {obj.name for obj in store.view().objects(SERVICE) if obj.namespace == namespace}


def service_watch(source: KubernetesSource) -> Any:
    return next(watch for watch in source.watches if watch.kind.kind == SERVICE)


async def until_services(store: Store, namespace: str, expected: set[str]) -> None:
    await wait_until(
        lambda: services_in(store, namespace) == expected,
        timeout=15.0,
        message=f"Services in the store == {sorted(expected)}",
    )


async def test_a_relist_keeps_what_exists_and_drops_what_went(
    objects: Objects, control_plane_kubeconfig: Path, kube_cluster: KubeCluster
) -> None:
    namespace = objects.namespace
    objects.service("keep")
    objects.service("doomed")
    # Outside --watch-namespace: never read.
    elsewhere = f"{namespace}-elsewhere"
    objects.core.create_namespace({"metadata": {"name": elsewhere}})
    try:
        objects.core.create_namespaced_service(elsewhere, service_body("unseen"))
        store = Store()
        sink = GatedSink(store)
        async with running_source(
            kubeconfig=control_plane_kubeconfig, namespace=namespace, sink=sink
        ) as source:
            assert services_in(store, namespace) == {"keep", "doomed"}
            assert services_in(store, elsewhere) == set()

            # The watch sees these, but they never reach the store.
            sink.closed = True
            objects.delete_service("doomed")
            objects.service("born")
            await wait_until(lambda: len(sink.dropped) >= 2, message="both events dropped")
            assert services_in(store, namespace) == {"keep", "doomed"}

            changes: list[Change] = []
            store.subscribe(changes.append)
            sink.closed = False
            source.resync()
            await until_services(store, namespace, {"keep", "born"})
            keep = ObjectKey(SERVICE, namespace, "keep")
            assert not any(keep in change.keys for change in changes), "keep was touched"
            assert service_watch(source).lists == 2

            # And the watch goes on after the relist.
            objects.service("after")
            await until_services(store, namespace, {"keep", "born", "after"})
    finally:
        objects.core.delete_namespace(elsewhere)


async def test_an_api_server_restart_and_a_410_lose_nothing(
    objects: Objects, control_plane_kubeconfig: Path
) -> None:
    local = objects.local
    namespace = objects.namespace
    objects.service("keep")
    objects.service("doomed")
    store = Store()
    async with running_source(
        kubeconfig=control_plane_kubeconfig, namespace=namespace, sink=store
    ) as source:
        changes: list[Change] = []
        store.subscribe(changes.append)
        await asyncio.to_thread(local.stop_apiserver)
        # While it is down, the cluster changes behind the watch, and etcd
        # forgets the history the watch would resume from: the restarted
        # server must answer 410 Gone, and the source must list again.
        local.delete_unvalidated(resource="services/specs", namespace=namespace, name="doomed")
        born = {"apiVersion": "v1", "kind": "Service", **service_body("born")}
        born["metadata"] = {"name": "born", "namespace": namespace}
        local.write_unvalidated(resource="services/specs", obj=born)
        local.compact_etcd()
        await asyncio.to_thread(local.start_apiserver)

        await until_services(store, namespace, {"keep", "born"})
        keep = ObjectKey(SERVICE, namespace, "keep")
        assert not any(keep in change.keys for change in changes), "keep was touched"
        assert service_watch(source).lists >= 2, "the Service watch resumed without a relist"

        objects.service("after")
        await until_services(store, namespace, {"keep", "born", "after"})


# ---------------------------------------------------------------- startup barrier


async def test_nothing_is_published_before_every_kind_is_listed(
    objects: Objects,
    kube_cluster: KubeCluster,
    control_plane_kubeconfig: Path,
    start_control_plane: StartControlPlane,
) -> None:
    namespace = objects.namespace
    objects.service("greeter")
    objects.ingress_class(f"ours-{namespace}")
    objects.ingress(
        "main", class_name=f"ours-{namespace}", host="greeter.example", service="greeter"
    )
    # Secrets forbidden: that one list fails until RBAC allows it.
    role = f"xds-ingress-{namespace}"
    without_secrets = [
        {**rule, "resources": [r for r in rule["resources"] if r != "secrets"]}
        for rule in CONTROL_PLANE_RULES
    ]
    kube_cluster.set_cluster_role_rules(role, without_secrets)

    control_plane = await start_control_plane(
        serve_settings(
            kubeconfig=control_plane_kubeconfig, namespace=namespace, http_port=free_port()
        )
    )
    source = control_plane.source
    assert isinstance(source, KubernetesSource)
    await wait_until(
        lambda: all(w.synced.is_set() for w in source.watches if w.kind.kind != "Secret"),
        timeout=10.0,
        message="every kind but Secret listed",
    )
    await asyncio.sleep(0.5)  # time enough for a premature build to happen
    assert not source.synced.is_set()
    assert control_plane.cache.current(DEFAULT_GROUP) is None
    assert control_plane.pipeline.report.builds == 0

    kube_cluster.set_cluster_role_rules(role, CONTROL_PLANE_RULES)
    await wait_until(
        lambda: control_plane.cache.current(DEFAULT_GROUP) is not None,
        timeout=10.0,
        message="a snapshot published once Secrets can be listed",
    )
    snapshot = control_plane.cache.current(DEFAULT_GROUP)
    assert snapshot is not None
    # The first snapshot is already complete: it has the Ingress's backend.
    clusters = snapshot.types[types.CLUSTER].resources
    assert backend_name(namespace=namespace, service="greeter", port=GRPC_PORT) in clusters


# ---------------------------------------------------------------- command line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "{tmp}", "--kubeconfig", "x"], "need --source kubernetes"),
        (["--source", "{tmp}", "--watch-namespace", "ns"], "need --source kubernetes"),
        (["--source", "kubernetes", "--watch-namespace", "Not_A_Name"], "namespace name"),
        (
            ["--source", "kubernetes", "--kubeconfig", "{tmp}/missing"],
            "cannot load a Kubernetes configuration",
        ),
    ],
)
def test_serve_rejects_bad_kubernetes_flags(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    xds_address = f"127.0.0.1:{free_port()}"  # bound only if the flags were wrongly accepted
    argv = ["serve", *(arg.format(tmp=tmp_path) for arg in args), "--xds-address", xds_address]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


async def test_tls_and_ca_secrets_are_read_and_other_secrets_never_stored(
    objects: Objects, control_plane_kubeconfig: Path
) -> None:
    namespace = objects.namespace
    pem = base64.b64encode(b"-----BEGIN CERTIFICATE-----\n").decode()
    for name, secret_type, data in (
        ("serving", "kubernetes.io/tls", {"tls.crt": pem, "tls.key": pem}),
        ("client-ca", "Opaque", {"ca.crt": pem}),
        ("database-password", "Opaque", {"password": pem}),
    ):
        objects.core.create_namespaced_secret(
            namespace,
            {"metadata": {"name": name}, "type": secret_type, "data": data},
        )
    # An Ingress naming all three, so none is merely parked as unreferenced.
    objects.networking.create_namespaced_ingress(
        namespace,
        {
            "metadata": {
                "name": "uses-secrets",
                "annotations": {
                    "xds-ingress.io/client-ca-secret": "client-ca",
                    "xds-ingress.io/backend-ca-secret": "database-password",
                },
            },
            "spec": {
                "ingressClassName": "not-ours",
                "tls": [{"secretName": "serving"}],
                "defaultBackend": {"service": {"name": "x", "port": {"number": 80}}},
            },
        },
    )
    store = Store()
    async with running_source(kubeconfig=control_plane_kubeconfig, namespace=namespace, sink=store):
        await wait_until(
            lambda: store.view().get(SECRET, namespace, "client-ca") is not None,
            timeout=15.0,
            message="the CA Secret in the store",
        )
        assert store.view().get(SECRET, namespace, "serving") is not None
        assert store.view().get(SECRET, namespace, "database-password") is None
        # A Secret that gains ca.crt is read; one that loses it is dropped.
        objects.core.patch_namespaced_secret(
            "database-password", namespace, {"data": {"ca.crt": pem}}
        )
        await wait_until(
            lambda: store.view().get(SECRET, namespace, "database-password") is not None,
            timeout=15.0,
            message="the Secret once it has a ca.crt",
        )
        objects.core.patch_namespaced_secret(
            "client-ca", namespace, [{"op": "remove", "path": "/data/ca.crt"}]
        )
        await wait_until(
            lambda: store.view().get(SECRET, namespace, "client-ca") is None,
            timeout=15.0,
            message="the Secret dropped once its ca.crt is gone",
        )


async def test_an_api_server_restart_and_a_410_under_load_fail_no_call(
    objects: Objects, backend_factory: BackendFactory, start_ingress: StartIngress
) -> None:
    """Issue 6's fault: the API server goes away and comes back unable to resume the watches."""
    local = objects.local
    namespace = objects.namespace
    a = await backend_factory("a")
    objects.service("greeter")
    objects.endpoint_slice("greeter-a", service="greeter", port=a.port)
    ours = f"ours-{namespace}"
    objects.ingress_class(ours)
    objects.ingress("main", class_name=ours, host="greeter.example", service="greeter")
    running = await start_ingress()
    await routes_to(running.target, "greeter.example", "a")

    codes: list[grpc.StatusCode] = []
    stop = asyncio.Event()

    async def steady_load() -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60.0
        while not stop.is_set() and len(codes) < 20_000 and loop.time() < deadline:
            _backend, code = await say_hello(running.target, authority="greeter.example")
            codes.append(code)

    load = asyncio.create_task(steady_load())
    try:
        await asyncio.sleep(0.3)
        await asyncio.to_thread(local.stop_apiserver)
        # Behind the watches' back: a write and a compaction, so that the
        # restarted server answers each watch's resume with 410 Gone.
        born = {"apiVersion": "v1", "kind": "Service", **service_body("born")}
        born["metadata"] = {"name": "born", "namespace": namespace}
        local.write_unvalidated(resource="services/specs", obj=born)
        local.compact_etcd()
        await asyncio.sleep(0.5)
        await asyncio.to_thread(local.start_apiserver)
        # Changes after the relist arrive.
        objects.ingress("late", class_name=ours, host="late.example", service="greeter")
        await routes_to(running.target, "late.example", "a")
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await load
    assert len(codes) > 20, "the load did not run"
    failed = [code for code in codes if code is not grpc.StatusCode.OK]
    assert failed == [], f"{len(failed)} of {len(codes)} calls failed: {failed[:5]}"
    await routes_to(running.target, "greeter.example", "a")
    # What changed behind the watches' back reached the store (by a relist
    # after 410 Gone, or by the resumed watch if the server could still serve it).
    await wait_until(
        lambda: running.control_plane.store.view().get(SERVICE, namespace, "born") is not None,
        timeout=10.0,
        message="the Service written while the API server was down",
    )
