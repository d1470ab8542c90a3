"""Status written back to a real API server: Ingress addresses, Events, one writer.

Runs against tests/kube_apiserver.py's etcd + kube-apiserver with a
ServiceAccount allowed what the source reads plus what status writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from kube_apiserver import KubeCluster
from kubernetes import client as kube
from peers import free_port, wait_until
from test_kubernetes_source import CONTROL_PLANE_RULES, Objects, objects, serve_settings

from xds_ingress import ir
from xds_ingress.app import ControlPlane
from xds_ingress.cli import main
from xds_ingress.resources import types
from xds_ingress.server.observer import Rejection
from xds_ingress.sources.kube_client import load_configuration
from xds_ingress.sources.objects import KubeObject
from xds_ingress.status.kube_writer import KubeStatusWriter, StatusSettings
from xds_ingress.status.leader import LeaseTiming
from xds_ingress.translate.backends import backend_name

__all__ = ["objects"]  # a fixture, used by name

pytestmark = pytest.mark.timeout(120)

# What status needs on top of what the source reads.
STATUS_RULES: tuple[Mapping[str, Any], ...] = (
    {
        "apiGroups": ["networking.k8s.io"],
        "resources": ["ingresses/status"],
        "verbs": ["get", "patch"],
    },
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "create", "update"],
    },
)
FAST = LeaseTiming(lease_seconds=15.0, renew_seconds=10.0, retry_seconds=0.2)


@pytest.fixture
def status_kubeconfig(kube_cluster: KubeCluster, kube_namespace: str) -> Iterator[Path]:
    name = f"xds-ingress-status-{kube_namespace}"
    try:
        yield kube_cluster.service_account_kubeconfig(
            namespace=kube_namespace, name=name, rules=(*CONTROL_PLANE_RULES, *STATUS_RULES)
        )
    finally:
        kube_cluster.delete_cluster_role(name)


def envoy_service(objects: Objects, *, ip: str = "", hostname: str = "") -> None:
    """The Envoy Service, its load balancer address set as a cloud controller would."""
    with contextlib.suppress(kube.ApiException):
        objects.core.create_namespaced_service(
            objects.namespace,
            {
                "metadata": {"name": "envoy"},
                "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80}]},
            },
        )
    entry = {"ip": ip} if ip else {"hostname": hostname}
    objects.core.patch_namespaced_service_status(
        "envoy", objects.namespace, {"status": {"loadBalancer": {"ingress": [entry]}}}
    )


def load_balancer(objects: Objects, name: str) -> list[dict[str, Any]]:
    ingress = objects.networking.read_namespaced_ingress(name, objects.namespace)
    balancer = ingress.status.load_balancer if ingress.status else None
    return [
        {k: v for k, v in (("ip", e.ip), ("hostname", e.hostname)) if v}
        for e in ((balancer.ingress if balancer else None) or ())
    ]


def events_of(objects: Objects, name: str) -> list[Any]:
    events = objects.core.list_namespaced_event(
        objects.namespace, field_selector=f"involvedObject.name={name}"
    )
    return list(events.items)


async def start_with_status(*, kubeconfig: Path, namespace: str) -> ControlPlane:
    """The control plane with --publish-service NAMESPACE/envoy, polling and retrying fast."""
    settings = dataclasses.replace(
        serve_settings(kubeconfig=kubeconfig, namespace=namespace, http_port=free_port()),
        publish_service=(namespace, "envoy"),
        leader_election_namespace=namespace,
    )
    control_plane = ControlPlane.from_settings(settings)
    writer = control_plane.status_writer
    assert writer is not None
    writer.settings = dataclasses.replace(writer.settings, timing=FAST, poll_seconds=0.2)
    await control_plane.start()
    return control_plane


@pytest.fixture
async def running() -> AsyncIterator[list[ControlPlane]]:
    started: list[ControlPlane] = []
    yield started
    for control_plane in started:
        await control_plane.stop()


async def test_ingresses_publish_the_envoy_service_address_and_write_only_changes(
    objects: Objects, status_kubeconfig: Path, running: list[ControlPlane]
) -> None:
    namespace = objects.namespace
    objects.service("greeter")
    objects.ingress_class(f"ours-{namespace}")
    objects.ingress("main", class_name=f"ours-{namespace}", host="a.example", service="greeter")
    objects.ingress_class(f"theirs-{namespace}", controller="example.com/other")
    objects.ingress(
        "foreign", class_name=f"theirs-{namespace}", host="b.example", service="greeter"
    )
    envoy_service(objects, ip="203.0.113.7")

    control_plane = await start_with_status(kubeconfig=status_kubeconfig, namespace=namespace)
    running.append(control_plane)
    await wait_until(
        lambda: load_balancer(objects, "main") == [{"ip": "203.0.113.7"}],
        timeout=15,
        message="main's status.loadBalancer",
    )
    # The cloud gives the Envoy Service a name instead: Ingresses follow.
    envoy_service(objects, hostname="lb.example.net")
    await wait_until(
        lambda: load_balancer(objects, "main") == [{"hostname": "lb.example.net"}],
        timeout=15,
        message="main's status follows the Service",
    )
    # No write loop: our own write comes back through the watch and stops there.
    writer = control_plane.status_writer
    assert writer is not None
    # (Awaited: the PATCH lands before the writer counts it.)
    await wait_until(lambda: writer.status_writes == 2, timeout=5, message="two writes")
    version = objects.networking.read_namespaced_ingress("main", namespace).metadata
    await asyncio.sleep(1.0)
    assert writer.status_writes == 2
    after = objects.networking.read_namespaced_ingress("main", namespace).metadata
    assert after.resource_version == version.resource_version
    # Another controller's Ingress is not ours to touch.
    assert load_balancer(objects, "foreign") == []


async def test_false_conditions_and_nacks_become_one_event_each(
    objects: Objects, status_kubeconfig: Path, running: list[ControlPlane]
) -> None:
    namespace = objects.namespace
    objects.service("greeter")
    objects.ingress_class(f"ours-{namespace}")
    objects.ingress("broken", class_name=f"ours-{namespace}", host="a.example", service="missing")
    objects.ingress("fine", class_name=f"ours-{namespace}", host="b.example", service="greeter")
    envoy_service(objects, ip="203.0.113.7")
    control_plane = await start_with_status(kubeconfig=status_kubeconfig, namespace=namespace)
    running.append(control_plane)

    await wait_until(lambda: bool(events_of(objects, "broken")), timeout=15, message="an Event")
    uid = objects.networking.read_namespaced_ingress("broken", namespace).metadata.uid
    (event,) = events_of(objects, "broken")
    assert (event.type, event.reason) == ("Warning", "BackendNotFound")
    assert event.involved_object.kind == "Ingress"
    assert event.involved_object.uid == uid
    assert f"Service {namespace}/missing not found" in event.message

    # Rebuilds (an unrelated Service, our own status writes) tell it no twice.
    objects.service("unrelated")
    await wait_until(
        lambda: load_balancer(objects, "fine") == [{"ip": "203.0.113.7"}],
        timeout=15,
        message="fine's status",
    )
    await asyncio.sleep(0.5)
    assert len(events_of(objects, "broken")) == 1
    assert events_of(objects, "fine") == []

    # A NACK of fine's cluster (as the xDS server reports one) is an Event on it too.
    cluster = backend_name(namespace=namespace, service="greeter", port=50051)
    control_plane.status.nacked(
        Rejection(
            stream_id=1,
            node_id="envoy-1",
            group="test",
            type_url=types.CLUSTER,
            resources={cluster: "v1"},
            message="Proto constraint validation failed (bad connect timeout)",
        )
    )
    await wait_until(lambda: bool(events_of(objects, "fine")), timeout=15, message="a NACK Event")
    (event,) = events_of(objects, "fine")
    assert (event.type, event.reason) == ("Warning", "Rejected")
    assert event.message == (
        f"Envoy rejected cluster {cluster}: Proto constraint validation failed "
        "(bad connect timeout)"
    )
    # Held on the Service and every Ingress routing to it, as Programmed=False.
    assert {(c.object.kind, c.object.name) for c in control_plane.status.programmed()} == {
        ("Service", "greeter"),
        ("Ingress", "fine"),
    }


def writer_for(
    kubeconfig: Path, namespace: str, identity: str, ingress: KubeObject
) -> KubeStatusWriter:
    return KubeStatusWriter(
        configuration=load_configuration(kubeconfig=str(kubeconfig)),
        settings=StatusSettings(
            publish_service=(namespace, "envoy"),
            lease_namespace=namespace,
            identity=identity,
            timing=FAST,
            poll_seconds=0.2,
        ),
        # As the source would hold it: without status, so every writer sees work.
        lookup=lambda ref: ingress if ref.name == ingress.name else None,
    )


async def test_one_writer_holds_the_lease_and_another_takes_over_when_it_stops(
    objects: Objects, status_kubeconfig: Path
) -> None:
    namespace = objects.namespace
    objects.service("greeter")
    objects.ingress_class(f"ours-{namespace}")
    objects.ingress("main", class_name=f"ours-{namespace}", host="a.example", service="greeter")
    envoy_service(objects, ip="203.0.113.7")
    ref = ir.ObjectRef(kind="Ingress", namespace=namespace, name="main")
    held = KubeObject(
        api_version="networking.k8s.io/v1",
        kind="Ingress",
        namespace=namespace,
        name="main",
        body={"metadata": {"name": "main", "namespace": namespace}},
    )
    first = writer_for(status_kubeconfig, namespace, "first", held)
    second = writer_for(status_kubeconfig, namespace, "second", held)
    tasks = {}
    try:
        tasks["first"] = asyncio.create_task(first.run())
        await wait_until(lambda: first.leading, timeout=10, message="first leads")
        tasks["second"] = asyncio.create_task(second.run())
        for writer in (first, second):
            writer.update(ingresses=frozenset({ref}), conditions=())
        await wait_until(
            lambda: load_balancer(objects, "main") == [{"ip": "203.0.113.7"}],
            timeout=10,
            message="the leader writes",
        )
        envoy_service(objects, ip="203.0.113.8")
        await wait_until(
            lambda: load_balancer(objects, "main") == [{"ip": "203.0.113.8"}],
            timeout=10,
            message="the leader follows the Service",
        )
        await asyncio.sleep(0.5)  # several retry periods: the follower stays one
        assert (first.status_writes, second.status_writes) == (2, 0)
        assert not second.leading

        # The first stops cleanly and releases the Lease: the second need
        # not wait out the 15 s lease to take over.
        tasks.pop("first").cancel()
        await wait_until(lambda: second.leading, timeout=5, message="second takes over")
        lease = kube.CoordinationV1Api(objects.core.api_client).read_namespaced_lease(
            "xds-ingress-status", namespace
        )
        assert lease.spec.holder_identity == "second"
        envoy_service(objects, ip="203.0.113.9")
        await wait_until(
            lambda: load_balancer(objects, "main") == [{"ip": "203.0.113.9"}],
            timeout=10,
            message="the new leader writes",
        )
        # One write: the status the first wrote was right when the second took
        # over. (Awaited: the PATCH lands before the writer counts it.)
        await wait_until(lambda: second.status_writes == 1, timeout=5, message="one write")
        await asyncio.sleep(0.5)
        assert (first.status_writes, second.status_writes) == (2, 1)
    finally:
        for task in tasks.values():
            task.cancel()
        for task in tasks.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "{tmp}", "--publish-service", "ns/envoy"], "need --source kubernetes"),
        (["--source", "{tmp}", "--leader-election-namespace", "ns"], "need --source kubernetes"),
        (["--source", "kubernetes", "--publish-service", "envoy"], "expected NAMESPACE/NAME"),
        (["--source", "kubernetes", "--leader-election-namespace", "No_Name"], "namespace name"),
    ],
)
def test_serve_rejects_bad_status_flags(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", *(arg.format(tmp=tmp_path) for arg in args)]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--xds-address", f"127.0.0.1:{free_port()}"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


async def test_a_lease_its_holder_stopped_renewing_is_taken_after_it_expires(
    objects: Objects, status_kubeconfig: Path
) -> None:
    namespace = objects.namespace
    # A replica that died without releasing: its Lease runs out on its own.
    kube.CoordinationV1Api(objects.core.api_client).create_namespaced_lease(
        namespace,
        {
            "metadata": {"name": "xds-ingress-status"},
            "spec": {"holderIdentity": "crashed", "leaseDurationSeconds": 2},
        },
    )
    held = KubeObject(
        api_version="networking.k8s.io/v1",
        kind="Ingress",
        namespace=namespace,
        name="none",
        body={},
    )
    survivor = writer_for(status_kubeconfig, namespace, "survivor", held)
    task = asyncio.create_task(survivor.run())
    try:
        await asyncio.sleep(1.0)
        assert not survivor.leading, "took a Lease that had not expired"
        await wait_until(lambda: survivor.leading, timeout=10, message="survivor takes over")
        lease = kube.CoordinationV1Api(objects.core.api_client).read_namespaced_lease(
            "xds-ingress-status", namespace
        )
        assert (lease.spec.holder_identity, lease.spec.lease_transitions) == ("survivor", 1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
