"""Gateway API from a real API server: GRPCRoutes served by a real Envoy, status written back.

The Gateway API CRDs (the standard channel pinned in scripts/install-kube.sh)
are installed into tests/kube_apiserver.py's API server; one test removes
them first, to check that a control plane started without them becomes
ready and picks them up once they are installed. The control plane runs
with a ServiceAccount allowed what it reads (list, watch) plus what status
needs (get and patch of */status, Events, the Lease), nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from kube_apiserver import KubeCluster
from kubernetes import client as kube
from kubernetes.client.exceptions import ApiException
from peers import BackendFactory, CallShape, EnvoyFactory, free_port, greet, wait_until
from test_kubernetes_source import (
    CONTROL_PLANE_RULES,
    Objects,
    objects,
    serve_settings,
    service_body,
)

from xds_ingress.app import ControlPlane
from xds_ingress.bootstrap import render_bootstrap
from xds_ingress.sources.backoff import Backoff
from xds_ingress.sources.kube_client import load_configuration
from xds_ingress.sources.kube_kinds import SERVICE as SERVICE_KIND
from xds_ingress.sources.kube_watch import QuietObserver
from xds_ingress.sources.kubernetes import KubernetesSource
from xds_ingress.status.leader import LeaseTiming
from xds_ingress.store import Store
from xds_ingress.translate.settings import DEFAULT_CONTROLLER_NAME

__all__ = ["objects"]  # a fixture, used by name

pytestmark = pytest.mark.timeout(180)

GROUP = "gateway.networking.k8s.io"
GREETER = "xds_ingress.demo.v1.Greeter"
OTHER_CONTROLLER = "example.com/other-controller"
STATUS_RULES: tuple[Mapping[str, Any], ...] = (
    {
        "apiGroups": [GROUP],
        "resources": [
            "gatewayclasses/status",
            "gateways/status",
            "grpcroutes/status",
            "httproutes/status",
        ],
        "verbs": ["get", "patch"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "create", "update"],
    },
)
FAST = LeaseTiming(lease_seconds=15.0, renew_seconds=10.0, retry_seconds=0.2)


# ---------------------------------------------------------------- objects


@dataclass
class GatewayObjects:
    """Gateway API objects of one test, written as the cluster admin."""

    cluster: KubeCluster
    namespace: str
    class_name: str = field(default_factory=lambda: f"xds-{secrets.token_hex(4)}")
    _classes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.custom = kube.CustomObjectsApi(self.cluster.api_client())

    def gateway_class(self, *, controller: str = DEFAULT_CONTROLLER_NAME) -> None:
        self.custom.create_cluster_custom_object(
            GROUP,
            "v1",
            "gatewayclasses",
            {
                "apiVersion": f"{GROUP}/v1",
                "kind": "GatewayClass",
                "metadata": {"name": self.class_name},
                "spec": {"controllerName": controller},
            },
        )
        self._classes.append(self.class_name)

    def gateway(
        self,
        name: str = "gw",
        *,
        hostname: str | None = "*.example.com",
        namespace_selector: Mapping[str, Any] | None = None,
    ) -> None:
        """One HTTP listener; with `namespace_selector`, allowedRoutes from: Selector."""
        listener: dict[str, Any] = {"name": "http", "port": 80, "protocol": "HTTP"}
        if hostname is not None:
            listener["hostname"] = hostname
        if namespace_selector is not None:
            listener["allowedRoutes"] = {
                "namespaces": {"from": "Selector", "selector": dict(namespace_selector)}
            }
        self.create(
            "gateways",
            {
                "kind": "Gateway",
                "metadata": {"name": name},
                "spec": {"gatewayClassName": self.class_name, "listeners": [listener]},
            },
        )

    def grpc_route(
        self, name: str, *, host: str, rules: Sequence[Mapping[str, Any]], gateway: str = "gw"
    ) -> None:
        self.create(
            "grpcroutes",
            {
                "kind": "GRPCRoute",
                "metadata": {"name": name},
                "spec": {
                    "parentRefs": [{"name": gateway}],
                    "hostnames": [host],
                    "rules": list(rules),
                },
            },
        )

    def create(self, plural: str, body: Mapping[str, Any], *, namespace: str = "") -> None:
        version = "v1beta1" if plural == "referencegrants" else "v1"
        self.custom.create_namespaced_custom_object(
            GROUP,
            version,
            namespace or self.namespace,
            plural,
            {"apiVersion": f"{GROUP}/{version}", **body},
        )

    def read(self, plural: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, "v1", self.namespace, plural, name
        )
        return found

    def status(self, plural: str, name: str) -> dict[str, Any]:
        status = self.read(plural, name).get("status")
        return status if isinstance(status, dict) else {}

    def cleanup(self) -> None:
        for name in self._classes:
            with contextlib.suppress(ApiException):
                self.custom.delete_cluster_custom_object(GROUP, "v1", "gatewayclasses", name)


def rule(
    *, backend: str, method: str | None = None, namespace: str | None = None
) -> dict[str, Any]:
    match: dict[str, Any] = {"service": GREETER}
    if method is not None:
        match["method"] = method
    ref: dict[str, Any] = {"name": backend, "port": 50051}
    if namespace is not None:
        ref["namespace"] = namespace
    return {"matches": [{"method": match}], "backendRefs": [ref]}


def condition(conditions: object, kind: str) -> dict[str, Any]:
    for entry in conditions if isinstance(conditions, list) else ():
        if isinstance(entry, dict) and entry.get("type") == kind:
            return entry
    return {}


def our_parents(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    parents = status.get("parents")
    return [
        parent
        for parent in (parents if isinstance(parents, list) else ())
        if parent.get("controllerName") == DEFAULT_CONTROLLER_NAME
    ]


def parent_condition(status: Mapping[str, Any], kind: str) -> tuple[str, str]:
    """(status, reason) of condition `kind` in our one parents entry, or ("", "")."""
    parents = our_parents(status)
    if len(parents) != 1:
        return ("", "")
    found = condition(parents[0].get("conditions"), kind)
    return (str(found.get("status", "")), str(found.get("reason", "")))


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def gateway_crds(kube_cluster: KubeCluster) -> KubeCluster:
    kube_cluster.install_gateway_api_crds()
    return kube_cluster


@pytest.fixture
def gateway_objects(kube_cluster: KubeCluster, kube_namespace: str) -> Iterator[GatewayObjects]:
    made = GatewayObjects(cluster=kube_cluster, namespace=kube_namespace)
    try:
        yield made
    finally:
        made.cleanup()


@pytest.fixture
def gateway_kubeconfig(kube_cluster: KubeCluster, kube_namespace: str) -> Iterator[Path]:
    name = f"xds-ingress-gateway-{kube_namespace}"
    try:
        yield kube_cluster.service_account_kubeconfig(
            namespace=kube_namespace, name=name, rules=(*CONTROL_PLANE_RULES, *STATUS_RULES)
        )
    finally:
        kube_cluster.delete_cluster_role(name)


@dataclass
class Running:
    control_plane: ControlPlane
    target: str


@pytest.fixture
async def start(
    gateway_kubeconfig: Path, kube_namespace: str, envoy_factory: EnvoyFactory
) -> AsyncIterator[Any]:
    started: list[ControlPlane] = []

    async def run(*, cluster_wide: bool = False) -> Running:
        http_port = free_port()
        settings = dataclasses.replace(
            serve_settings(
                kubeconfig=gateway_kubeconfig, namespace=kube_namespace, http_port=http_port
            ),
            leader_election_namespace=kube_namespace,
            watch_namespace=None if cluster_wide else kube_namespace,
        )
        control_plane = ControlPlane.from_settings(settings)
        writer = control_plane.status_writer
        assert writer is not None
        writer.settings = dataclasses.replace(writer.settings, timing=FAST)
        started.append(control_plane)
        await control_plane.start()
        envoy = envoy_factory(
            render_bootstrap(
                xds_address=f"127.0.0.1:{control_plane.port}",
                node_id="test-envoy",
                node_cluster="test",
                admin_address=None,
            )
        )
        await envoy.wait_ready()
        return Running(control_plane=control_plane, target=f"127.0.0.1:{http_port}")

    try:
        yield run
    finally:
        for control_plane in started:
            await control_plane.stop()


async def answered(
    target: str, host: str, *, shape: CallShape = "unary"
) -> tuple[str, grpc.StatusCode]:
    call = await greet(target, shape=shape, authority=host, timeout=2.0)
    return call.backend, call.code


async def until_answered(
    target: str, host: str, expected: tuple[str, grpc.StatusCode], *, shape: CallShape = "unary"
) -> None:
    async def check() -> bool:
        return await answered(target, host, shape=shape) == expected

    await wait_until(
        check, timeout=30.0, interval=0.1, message=f"{shape} call to {host} → {expected}"
    )


async def until(predicate: Any, *, message: str) -> None:
    """Until `predicate` (which reads the API server: a blocking call) holds."""

    async def check() -> bool:
        return bool(await asyncio.to_thread(predicate))

    await wait_until(check, timeout=20.0, interval=0.1, message=message)


async def until_parent_condition(
    objects: GatewayObjects,
    resource: str,
    name: str,
    kind: str,
    expected: tuple[str, str],
    *,
    when: str = "",
) -> None:
    """Until condition `kind` of route `name` in our parents entry is (status, reason)."""
    await until(
        lambda: parent_condition(objects.status(resource, name), kind) == expected,
        message=" ".join(filter(None, (f"{name}: {kind}", *expected, when))),
    )


def backends_for(objects: Objects, ports: Mapping[str, int]) -> None:
    for name, port in ports.items():
        objects.service(name)
        objects.endpoint_slice(f"{name}-1", service=name, port=port)


# ---------------------------------------------------------------- traffic and status


async def test_grpcroute_routes_by_method_and_status_is_written(
    gateway_crds: KubeCluster,
    objects: Objects,
    gateway_objects: GatewayObjects,
    backend_factory: BackendFactory,
    start: Any,
) -> None:
    a, b = await backend_factory("a"), await backend_factory("b")
    backends_for(objects, {"greeter-a": a.port, "greeter-b": b.port})
    gateway_objects.gateway_class()
    gateway_objects.gateway()
    gateway_objects.grpc_route(
        "greeter",
        host="grpc.example.com",
        rules=[rule(backend="greeter-a", method="SayHello"), rule(backend="greeter-b")],
    )
    gateway_objects.grpc_route(
        "broken", host="broken.example.com", rules=[rule(backend="greeter-missing")]
    )
    # Another controller's entry in status.parents: ours is added beside it.
    foreign = {
        "parentRef": {"name": "their-gateway"},
        "controllerName": OTHER_CONTROLLER,
        "conditions": [
            {
                "type": "Accepted",
                "status": "True",
                "reason": "Accepted",
                "message": "theirs",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
    gateway_objects.custom.patch_namespaced_custom_object_status(
        GROUP,
        "v1",
        objects.namespace,
        "grpcroutes",
        "greeter",
        {"status": {"parents": [foreign]}},
    )

    running = await start()
    # By method: SayHello to a, the rest of the service to b.
    await until_answered(running.target, "grpc.example.com", ("a", grpc.StatusCode.OK))
    await until_answered(
        running.target, "grpc.example.com", ("b", grpc.StatusCode.OK), shape="server_stream"
    )
    # The route whose backend is missing answers UNAVAILABLE; the other works on.
    await until_answered(running.target, "broken.example.com", ("", grpc.StatusCode.UNAVAILABLE))

    def gateway_done() -> bool:
        status = gateway_objects.status("gateways", "gw")
        listeners = status.get("listeners") or []
        return (
            condition(status.get("conditions"), "Programmed").get("status") == "True"
            and len(listeners) == 1
            and listeners[0].get("attachedRoutes") == 2
        )

    await until(gateway_done, message="Gateway status: Programmed, two routes attached")
    await until(
        lambda: (
            condition(
                gateway_objects.custom.get_cluster_custom_object(
                    GROUP, "v1", "gatewayclasses", gateway_objects.class_name
                )
                .get("status", {})
                .get("conditions"),
                "Accepted",
            ).get("status")
            == "True"
        ),
        message="GatewayClass Accepted",
    )
    gateway = gateway_objects.read("gateways", "gw")
    generation = gateway["metadata"]["generation"]
    status = gateway["status"]
    for kind in ("Accepted", "Programmed"):
        found = condition(status["conditions"], kind)
        assert (found["status"], found["reason"]) == ("True", kind)
        assert found["observedGeneration"] == generation
    (listener,) = status["listeners"]
    assert listener["name"] == "http"
    assert {entry["kind"] for entry in listener["supportedKinds"]} == {"GRPCRoute", "HTTPRoute"}
    for kind in ("Accepted", "Programmed", "ResolvedRefs"):
        assert condition(listener["conditions"], kind)["status"] == "True", kind

    await until_parent_condition(
        gateway_objects, "grpcroutes", "greeter", "ResolvedRefs", ("True", "ResolvedRefs")
    )
    greeter = gateway_objects.status("grpcroutes", "greeter")
    assert parent_condition(greeter, "Accepted") == ("True", "Accepted")
    (ours,) = our_parents(greeter)
    # The parentRef as the route spells it (with the API's defaults filled in).
    assert (
        ours["parentRef"] == gateway_objects.read("grpcroutes", "greeter")["spec"]["parentRefs"][0]
    )
    assert ours["parentRef"]["name"] == "gw"
    (theirs,) = (p for p in greeter["parents"] if p["controllerName"] == OTHER_CONTROLLER)
    assert theirs["conditions"] == foreign["conditions"], "another controller's entry changed"

    await until_parent_condition(
        gateway_objects, "grpcroutes", "broken", "ResolvedRefs", ("False", "BackendNotFound")
    )
    broken = gateway_objects.status("grpcroutes", "broken")
    assert parent_condition(broken, "Accepted") == ("True", "Accepted")

    # The rejection is an Event on the route.
    def warned() -> bool:
        events = objects.core.list_namespaced_event(
            objects.namespace, field_selector="involvedObject.name=broken"
        )
        return any(event.reason == "BackendNotFound" for event in events.items)

    await until(warned, message="a BackendNotFound Event on broken")

    # Nothing changes: no write, and the transition times stay.
    writer = running.control_plane.status_writer
    assert writer is not None
    writes = writer.gateway_api_writes
    before = gateway_objects.status("gateways", "gw")
    objects.service("unrelated")  # a rebuild
    await asyncio.sleep(1.0)
    assert writer.gateway_api_writes == writes
    assert gateway_objects.status("gateways", "gw") == before

    # Fixed: the Service appears, the condition turns, its time moves on.
    backends_for(objects, {"greeter-missing": a.port})
    await until_answered(running.target, "broken.example.com", ("a", grpc.StatusCode.OK))
    await until_parent_condition(
        gateway_objects,
        "grpcroutes",
        "broken",
        "ResolvedRefs",
        ("True", "ResolvedRefs"),
        when="once its Service exists",
    )
    assert gateway_objects.status("gateways", "gw")["conditions"] == before["conditions"]


async def test_an_httproute_is_watched_and_its_status_written(
    gateway_crds: KubeCluster,
    objects: Objects,
    gateway_objects: GatewayObjects,
    backend_factory: BackendFactory,
    start: Any,
) -> None:
    a = await backend_factory("a")
    backends_for(objects, {"greeter-a": a.port})
    gateway_objects.gateway_class()
    gateway_objects.gateway()
    running = await start()
    # Created after the start: it comes as a watch event.
    gateway_objects.create(
        "httproutes",
        {
            "kind": "HTTPRoute",
            "metadata": {"name": "web"},
            "spec": {
                "parentRefs": [{"name": "gw"}],
                "hostnames": ["web.example.com"],
                "rules": [{"backendRefs": [{"name": "greeter-a", "port": 50051}]}],
            },
        },
    )
    # gRPC is HTTP/2: a path-prefix HTTPRoute carries it too.
    await until_answered(running.target, "web.example.com", ("a", grpc.StatusCode.OK))
    await until_parent_condition(
        gateway_objects, "httproutes", "web", "ResolvedRefs", ("True", "ResolvedRefs")
    )
    route = gateway_objects.read("httproutes", "web")
    assert parent_condition(route["status"], "Accepted") == ("True", "Accepted")
    (ours,) = our_parents(route["status"])
    for found in ours["conditions"]:
        assert found["observedGeneration"] == route["metadata"]["generation"]
    await until(
        lambda: (
            [
                listener.get("attachedRoutes")
                for listener in gateway_objects.status("gateways", "gw").get("listeners", [])
            ]
            == [1]
        ),
        message="the HTTPRoute counted as attached",
    )


async def test_a_backend_in_another_namespace_needs_a_reference_grant(
    gateway_crds: KubeCluster,
    objects: Objects,
    gateway_objects: GatewayObjects,
    backend_factory: BackendFactory,
    start: Any,
) -> None:
    a = await backend_factory("a")
    elsewhere = f"{objects.namespace}-backends"
    objects.core.create_namespace({"metadata": {"name": elsewhere}})
    there = Objects(cluster=objects.cluster, namespace=elsewhere)
    backends_for(there, {"greeter-a": a.port})
    gateway_objects.gateway_class()
    gateway_objects.gateway()
    gateway_objects.grpc_route(
        "greeter",
        host="grpc.example.com",
        rules=[rule(backend="greeter-a", namespace=elsewhere)],
    )
    try:
        running = await start(cluster_wide=True)
        await until_parent_condition(
            gateway_objects, "grpcroutes", "greeter", "ResolvedRefs", ("False", "RefNotPermitted")
        )
        await until_answered(running.target, "grpc.example.com", ("", grpc.StatusCode.UNAVAILABLE))

        gateway_objects.create(
            "referencegrants",
            {
                "kind": "ReferenceGrant",
                "metadata": {"name": "greeters"},
                "spec": {
                    "from": [{"group": GROUP, "kind": "GRPCRoute", "namespace": objects.namespace}],
                    "to": [{"group": "", "kind": "Service"}],
                },
            },
            namespace=elsewhere,
        )
        await until_answered(running.target, "grpc.example.com", ("a", grpc.StatusCode.OK))
        await until_parent_condition(
            gateway_objects,
            "grpcroutes",
            "greeter",
            "ResolvedRefs",
            ("True", "ResolvedRefs"),
            when="with the grant",
        )
    finally:
        with contextlib.suppress(ApiException):
            objects.core.delete_namespace(elsewhere)


async def test_a_listener_selecting_namespaces_by_label_follows_relabelling(
    gateway_crds: KubeCluster,
    objects: Objects,
    gateway_objects: GatewayObjects,
    backend_factory: BackendFactory,
    start: Any,
) -> None:
    """allowedRoutes.namespaces from: Selector, with the route in another namespace."""
    a = await backend_factory("a")
    label = "xds-ingress.test/gateway"
    shared = f"shared-{secrets.token_hex(4)}"  # the cluster is shared by every test
    elsewhere = f"{objects.namespace}-team"
    objects.core.create_namespace({"metadata": {"name": elsewhere, "labels": {label: shared}}})
    there = Objects(cluster=objects.cluster, namespace=elsewhere)
    backends_for(there, {"greeter-a": a.port})
    team = GatewayObjects(cluster=objects.cluster, namespace=elsewhere)
    gateway_objects.gateway_class()
    gateway_objects.gateway(hostname=None, namespace_selector={"matchLabels": {label: shared}})
    team.create(
        "grpcroutes",
        {
            "kind": "GRPCRoute",
            "metadata": {"name": "greeter"},
            "spec": {
                "parentRefs": [{"name": "gw", "namespace": objects.namespace}],
                "hostnames": ["grpc.example.com"],
                "rules": [rule(backend="greeter-a")],
            },
        },
    )

    def attached() -> object:
        listeners = gateway_objects.status("gateways", "gw").get("listeners") or [{}]
        return listeners[0].get("attachedRoutes")

    def relabel(value: str) -> None:
        objects.core.patch_namespace(elsewhere, {"metadata": {"labels": {label: value}}})

    try:
        running = await start(cluster_wide=True)
        await until_answered(running.target, "grpc.example.com", ("a", grpc.StatusCode.OK))
        await until_parent_condition(
            team,
            "grpcroutes",
            "greeter",
            "Accepted",
            ("True", "Accepted"),
            when="through the selector",
        )
        await until(lambda: attached() == 1, message="the listener counts the route")

        # The namespace no longer matches: the route detaches, and says why.
        relabel("private")
        await until_answered(
            running.target, "grpc.example.com", ("", grpc.StatusCode.UNIMPLEMENTED)
        )
        await until_parent_condition(
            team,
            "grpcroutes",
            "greeter",
            "Accepted",
            ("False", "NotAllowedByListeners"),
            when="once its namespace is relabelled",
        )
        await until(lambda: attached() == 0, message="the listener no longer counts it")
        gateway_status = gateway_objects.status("gateways", "gw")
        assert condition(gateway_status.get("conditions"), "Programmed")["status"] == "True"

        # And back.
        relabel(shared)
        await until_answered(running.target, "grpc.example.com", ("a", grpc.StatusCode.OK))
        await until_parent_condition(
            team, "grpcroutes", "greeter", "Accepted", ("True", "Accepted"), when="again"
        )
        await until(lambda: attached() == 1, message="the listener counts it again")
    finally:
        with contextlib.suppress(ApiException):
            objects.core.delete_namespace(elsewhere)


async def test_with_watch_namespace_a_selector_still_reads_the_namespace_labels(
    gateway_crds: KubeCluster,
    objects: Objects,
    gateway_objects: GatewayObjects,
    backend_factory: BackendFactory,
    start: Any,
) -> None:
    """Namespaces are cluster-scoped: watched cluster-wide even when the rest is not."""
    a = await backend_factory("a")
    backends_for(objects, {"greeter-a": a.port})
    label = "xds-ingress.test/gateway"
    shared = f"shared-{secrets.token_hex(4)}"
    objects.core.patch_namespace(objects.namespace, {"metadata": {"labels": {label: shared}}})
    gateway_objects.gateway_class()
    gateway_objects.gateway(
        hostname=None,
        namespace_selector={
            "matchExpressions": [{"key": label, "operator": "In", "values": [shared]}]
        },
    )
    gateway_objects.grpc_route(
        "greeter", host="grpc.example.com", rules=[rule(backend="greeter-a")]
    )
    running = await start()  # --watch-namespace: this test's namespace
    await until_answered(running.target, "grpc.example.com", ("a", grpc.StatusCode.OK))
    objects.core.patch_namespace(objects.namespace, {"metadata": {"labels": {label: None}}})
    await until_answered(running.target, "grpc.example.com", ("", grpc.StatusCode.UNIMPLEMENTED))


async def test_an_invalid_namespace_selector_is_reported_on_the_listener(
    gateway_crds: KubeCluster,
    objects: Objects,
    gateway_objects: GatewayObjects,
    backend_factory: BackendFactory,
    start: Any,
) -> None:
    """The CRD does not check operators: the API server stores it, we report it."""
    a = await backend_factory("a")
    backends_for(objects, {"greeter-a": a.port})
    gateway_objects.gateway_class()
    selector = {"matchExpressions": [{"key": "team", "operator": "Equals", "values": ["a"]}]}
    gateway_objects.gateway(hostname=None, namespace_selector=selector)
    gateway_objects.grpc_route(
        "greeter", host="grpc.example.com", rules=[rule(backend="greeter-a")]
    )
    running = await start()

    def listener_accepted() -> dict[str, Any]:
        listeners = gateway_objects.status("gateways", "gw").get("listeners") or [{}]
        return condition(listeners[0].get("conditions"), "Accepted")

    await until(
        lambda: listener_accepted().get("reason") == "UnsupportedValue",
        message="the listener: Accepted False UnsupportedValue",
    )
    assert listener_accepted()["status"] == "False"
    assert "operator 'Equals' is not one of" in listener_accepted()["message"]
    await until_parent_condition(
        gateway_objects, "grpcroutes", "greeter", "Accepted", ("False", "NotAllowedByListeners")
    )
    await until_answered(running.target, "grpc.example.com", ("", grpc.StatusCode.UNIMPLEMENTED))


def stale_parent(gateway: str, *, controller: str = DEFAULT_CONTROLLER_NAME) -> dict[str, Any]:
    """A status.parents entry as a previous run (or another controller) left it."""
    return {
        "parentRef": {"group": GROUP, "kind": "Gateway", "name": gateway},
        "controllerName": controller,
        "conditions": [
            {
                "type": "Accepted",
                "status": "True",
                "reason": "Accepted",
                "message": "written before the restart",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }


async def test_parents_entries_for_parent_refs_the_route_no_longer_has_are_removed(
    gateway_crds: KubeCluster,
    objects: Objects,
    gateway_objects: GatewayObjects,
    backend_factory: BackendFactory,
    start: Any,
) -> None:
    """Left by an earlier run: the route moved from Gateway old-gw to gw while we were down."""
    a = await backend_factory("a")
    backends_for(objects, {"greeter-a": a.port})
    gateway_objects.gateway_class()
    gateway_objects.gateway()
    gateway_objects.grpc_route(
        "greeter", host="grpc.example.com", rules=[rule(backend="greeter-a")]
    )
    theirs = stale_parent("their-gateway", controller=OTHER_CONTROLLER)
    gateway_objects.custom.patch_namespaced_custom_object_status(
        GROUP,
        "v1",
        objects.namespace,
        "grpcroutes",
        "greeter",
        {"status": {"parents": [stale_parent("old-gw"), theirs]}},
    )

    running = await start()
    await until_answered(running.target, "grpc.example.com", ("a", grpc.StatusCode.OK))

    def parents() -> list[tuple[str, str]]:
        found = gateway_objects.status("grpcroutes", "greeter").get("parents") or []
        return sorted((p["controllerName"], p["parentRef"]["name"]) for p in found)

    await until(
        lambda: (
            parents()
            == sorted([(DEFAULT_CONTROLLER_NAME, "gw"), (OTHER_CONTROLLER, "their-gateway")])
        ),
        message="our stale entry gone, the current one written, theirs kept",
    )
    (kept,) = (
        p
        for p in gateway_objects.status("grpcroutes", "greeter")["parents"]
        if p["controllerName"] == OTHER_CONTROLLER
    )
    assert kept == theirs


async def test_a_route_left_with_an_entry_of_ours_after_a_restart_is_cleaned(
    gateway_crds: KubeCluster,
    objects: Objects,
    gateway_objects: GatewayObjects,
    start: Any,
) -> None:
    """Its Gateway was deleted while no replica ran: translate says nothing about the route."""
    gateway_objects.gateway_class()
    gateway_objects.gateway("mine")  # a Gateway of ours, to know when status was written
    gateway_objects.grpc_route(
        "orphan", host="grpc.example.com", rules=[rule(backend="greeter-a")], gateway="gone"
    )
    theirs = stale_parent("their-gateway", controller=OTHER_CONTROLLER)
    gateway_objects.custom.patch_namespaced_custom_object_status(
        GROUP,
        "v1",
        objects.namespace,
        "grpcroutes",
        "orphan",
        {"status": {"parents": [stale_parent("gone"), theirs]}},
    )
    assert len(gateway_objects.status("grpcroutes", "orphan")["parents"]) == 2

    await start()
    await until(
        lambda: (
            condition(
                gateway_objects.status("gateways", "mine").get("conditions"), "Programmed"
            ).get("status")
            == "True"
        ),
        message="our Gateway's status written: the writer leads",
    )
    await until(
        lambda: gateway_objects.status("grpcroutes", "orphan").get("parents") == [theirs],
        message="our entry from the earlier run removed, the other controller's kept",
    )


async def test_a_gateway_of_another_controller_gets_no_status(
    gateway_crds: KubeCluster,
    objects: Objects,
    gateway_objects: GatewayObjects,
    backend_factory: BackendFactory,
    start: Any,
) -> None:
    a = await backend_factory("a")
    backends_for(objects, {"greeter-a": a.port})
    gateway_objects.gateway_class(controller=OTHER_CONTROLLER)
    gateway_objects.gateway()
    gateway_objects.grpc_route(
        "greeter", host="grpc.example.com", rules=[rule(backend="greeter-a")]
    )
    # A control Gateway of ours in the same namespace, to know when status was written.
    mine = GatewayObjects(cluster=objects.cluster, namespace=objects.namespace)
    mine.gateway_class()
    mine.gateway("mine")
    try:
        running = await start()
        await until(
            lambda: (
                condition(mine.status("gateways", "mine").get("conditions"), "Programmed").get(
                    "status"
                )
                == "True"
            ),
            message="our Gateway's status",
        )
        await until_answered(
            running.target, "grpc.example.com", ("", grpc.StatusCode.UNIMPLEMENTED)
        )
        theirs = gateway_objects.status("gateways", "gw")
        assert not theirs.get("listeners"), theirs
        assert all(c.get("reason") == "Pending" for c in theirs.get("conditions", [])), theirs
        assert our_parents(gateway_objects.status("grpcroutes", "greeter")) == []
    finally:
        mine.cleanup()


async def test_a_gateway_class_of_ours_is_accepted_before_any_gateway_uses_it(
    gateway_crds: KubeCluster,
    gateway_objects: GatewayObjects,
    start: Any,
) -> None:
    gateway_objects.gateway_class()
    await start()

    def class_accepted() -> dict[str, Any]:
        gateway_class = gateway_objects.custom.get_cluster_custom_object(
            GROUP, "v1", "gatewayclasses", gateway_objects.class_name
        )
        found: dict[str, Any] = condition(
            gateway_class.get("status", {}).get("conditions"), "Accepted"
        )
        return found

    await until(lambda: class_accepted().get("status") == "True", message="GatewayClass Accepted")
    assert class_accepted()["reason"] == "Accepted"


# ---------------------------------------------------------------- CRDs come and go


async def test_started_before_the_crds_it_becomes_ready_and_picks_them_up(
    kube_cluster: KubeCluster,
    objects: Objects,
    gateway_objects: GatewayObjects,
    backend_factory: BackendFactory,
    start: Any,
) -> None:
    await asyncio.to_thread(kube_cluster.delete_gateway_api_crds)
    try:
        a = await backend_factory("a")
        backends_for(objects, {"greeter-a": a.port})
        running = await start()
        source = running.control_plane.source
        assert isinstance(source, KubernetesSource)
        # Ready without the CRDs (start() returned; the barrier is open).
        await asyncio.wait_for(source.synced.wait(), timeout=10.0)
        assert {w.kind.kind for w in source.watches if w.installed is False} >= {
            "Gateway",
            "GRPCRoute",
        }

        await asyncio.to_thread(kube_cluster.install_gateway_api_crds)
        gateway_objects.gateway_class()
        gateway_objects.gateway()
        gateway_objects.grpc_route(
            "greeter", host="grpc.example.com", rules=[rule(backend="greeter-a")]
        )
        # Looked for again within 10 s (kube_watch.absent_backoff).
        await until_answered(running.target, "grpc.example.com", ("a", grpc.StatusCode.OK))

        # Removed: its objects go, and so do their routes.
        await asyncio.to_thread(kube_cluster.delete_gateway_api_crds)
        await until_answered(
            running.target, "grpc.example.com", ("", grpc.StatusCode.UNIMPLEMENTED)
        )
    finally:
        await asyncio.to_thread(kube_cluster.install_gateway_api_crds)


# ---------------------------------------------------------------- bookmarks


class Bookmarks(QuietObserver):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def bookmark(self, kind: str, *, resource_version: str) -> None:
        self.seen.append((kind, resource_version))


async def test_watch_bookmarks_move_the_resume_point(
    objects: Objects, gateway_kubeconfig: Path
) -> None:
    objects.service("greeter")
    observer = Bookmarks()
    source = KubernetesSource(
        configuration=load_configuration(kubeconfig=str(gateway_kubeconfig)),
        namespace=objects.namespace,
        kinds=(SERVICE_KIND,),
        # The API server sends a bookmark about 2 s before a watch times
        # out, when the kind has changed since the watch began.
        watch_timeout_seconds=3,
        backoff=lambda: Backoff(initial_seconds=0.05, max_seconds=0.5),
        observer=observer,
    )
    task = asyncio.create_task(source.run(Store()))
    try:
        await asyncio.wait_for(source.synced.wait(), timeout=10.0)
        (watch,) = source.watches
        listed_at = watch.resource_version
        assert listed_at is not None and watch.bookmarks == 0
        # Services change, in a namespace this source does not watch: no
        # event reaches it, only a bookmark saying how far the cluster got.
        name = f"elsewhere-{secrets.token_hex(4)}"
        objects.core.create_namespaced_service("default", service_body(name))
        objects.core.delete_namespaced_service(name, "default")
        await wait_until(lambda: watch.bookmarks >= 1, timeout=20.0, message="a bookmark arrived")
        kind, resource_version = observer.seen[-1]
        assert kind == "Service"
        assert int(resource_version) > int(listed_at)
        # The next watch resumes from the bookmark, without listing again.
        assert watch.resource_version == resource_version
        assert watch.lists == 1, "a bookmark must not cost a list"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
