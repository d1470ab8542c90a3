"""A NACK becomes status on the objects behind the rejected resource, and heals.

Origins and the stage are checked on their own; then end to end with the
file source and a real Envoy, in both xDS variants. No Ingress our
translator lets through is known to make Envoy NACK (an IPv6 address with a
zone and an Ed25519 certificate were tried: Envoy 1.40 takes both), so the
end-to-end test injects a bad route config in place of the one built from
ingress.yaml, as test_end_to_end does for clusters.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest
from envoy.admin.v3 import config_dump_shared_pb2
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.route.v3 import route_pb2
from envoy.service.status.v3 import csds_pb2, csds_pb2_grpc
from ingress_harness import (
    NAMESPACE,
    Ingress,
    endpoint_slice,
    ingress,
    routes_to,
    rule,
    service,
)
from peers import wait_until
from tls_certs import CertificateAuthority, tls_secret

from xds_ingress import ir
from xds_ingress.cache import DEFAULT_GROUP, make_resource, snapshot_from_resources
from xds_ingress.demo.backend import GreeterBackend
from xds_ingress.resources import types
from xds_ingress.resources.builder import ResourceBuilder, Resources
from xds_ingress.server.observer import Answer, Rejection
from xds_ingress.sources.objects import parse_object
from xds_ingress.status import StatusStage, origins
from xds_ingress.store import Store
from xds_ingress.translate import ListenerSettings, translate

pytestmark = pytest.mark.timeout(120)

SETTINGS = ListenerSettings(
    listen_address="127.0.0.1", http_port=8080, https_port=8443, claim_classless=True
)


def ref(kind: str, name: str) -> ir.ObjectRef:
    return ir.ObjectRef(kind=kind, namespace=NAMESPACE, name=name)


def site_translation() -> ir.Translation:
    """Ingress `site` (TLS with Secret `cert`) and `other`, both routing to greeter-a."""
    store = Store()
    ca = CertificateAuthority()
    site = ingress("site", [rule("a.example.com", ("/", "Prefix", "greeter-a"))])
    site["spec"]["tls"] = [{"hosts": ["a.example.com"], "secretName": "cert"}]
    documents = [
        (service("greeter-a"), "services.yaml"),
        (service("greeter-b"), "services.yaml"),
        (endpoint_slice("greeter-a", 50051), "services.yaml"),
        (tls_secret("cert", ca.issue("a.example.com"), namespace=NAMESPACE), "secret.yaml"),
        (site, "site.yaml"),
        (ingress("other", [rule("b.example.com", ("/", "Prefix", "greeter-b"))]), "other.yaml"),
    ]
    for document, source in documents:
        store.apply(parse_object(document, source=source), origin="test")
    return translate(store.view(), settings=SETTINGS)


def test_origins_name_the_objects_behind_every_resource() -> None:
    config = site_translation().config
    found = origins(config)
    site, other = ref("Ingress", "site"), ref("Ingress", "other")
    for type_url in (types.CLUSTER, types.ENDPOINT):
        assert found[(type_url, "demo/greeter-a:50051")] == {ref("Service", "greeter-a"), site}
        assert found[(type_url, "demo/greeter-b:50051")] == {ref("Service", "greeter-b"), other}
    assert found[(types.ROUTE, "http")] == {site, other}
    # The HTTPS route config's 421 answer comes from the Secret it is named after.
    assert found[(types.ROUTE, "https/demo/cert")] == {site, ref("Secret", "cert")}
    assert found[(types.SECRET, "demo/cert")] == {site, ref("Secret", "cert")}
    assert found[(types.LISTENER, "http")] == {site, other}
    assert found[(types.LISTENER, "https")] == {site, ref("Secret", "cert")}
    # The file of an object the IR names only by name comes from `locate`.
    files = {"greeter-a": "services.yaml"}
    located = origins(
        config,
        locate=lambda r: ir.ObjectRef(r.kind, r.namespace, r.name, source=files.get(r.name, "")),
    )
    (service_ref,) = [
        r for r in located[(types.CLUSTER, "demo/greeter-a:50051")] if r.kind == "Service"
    ]
    assert service_ref.source == "services.yaml"


def rejection(stream_id: int, type_url: str, resources: dict[str, str]) -> Rejection:
    return Rejection(
        stream_id=stream_id,
        node_id=f"envoy-{stream_id}",
        group="test",
        type_url=type_url,
        resources=resources,
        message="Proto constraint validation failed:\n  bad value",
    )


def answer(stream_id: int, type_url: str, resources: dict[str, str]) -> Answer:
    return Answer(
        stream_id=stream_id,
        node_id=f"envoy-{stream_id}",
        group="test",
        type_url=type_url,
        resources=resources,
    )


def programmed(stage: StatusStage) -> dict[str, str]:
    return {f"{c.object.kind}/{c.object.name}": c.message for c in stage.programmed()}


def test_a_nack_is_held_per_stream_until_that_stream_acks_the_resource(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="xds_ingress.status")
    stage = StatusStage()
    stage.built(site_translation())
    cluster = "demo/greeter-b:50051"
    stage.nacked(rejection(1, types.CLUSTER, {cluster: "v2"}))
    stage.nacked(rejection(2, types.CLUSTER, {cluster: "v2"}))
    assert programmed(stage) == {
        "Service/greeter-b": f"2 Envoys rejected cluster {cluster}: "
        "Proto constraint validation failed: bad value",
        "Ingress/other": f"2 Envoys rejected cluster {cluster}: "
        "Proto constraint validation failed: bad value",
    }
    (condition, *_) = stage.programmed()
    assert (condition.type, condition.status, condition.reason) == (
        "Programmed",
        ir.ConditionStatus.FALSE,
        "Rejected",
    )
    assert condition in stage.conditions()
    # An ACK of other resources, or by another stream, releases nothing of stream 1's.
    stage.acked(answer(1, types.CLUSTER, {"demo/greeter-a:50051": "v1"}))
    stage.acked(answer(2, types.CLUSTER, {cluster: "v3"}))
    assert set(programmed(stage)) == {"Service/greeter-b", "Ingress/other"}
    assert "Envoy rejected" in programmed(stage)["Ingress/other"]
    # A rebuild keeps it: the resource is still configured.
    stage.built(site_translation())
    stage.acked(answer(1, types.CLUSTER, {cluster: "v3"}))
    assert programmed(stage) == {}
    # A closed stream takes its NACKs with it; a removal rejected is no finding.
    stage.nacked(rejection(3, types.ROUTE, {"http": "v9", "gone": ""}))
    assert set(programmed(stage)) == {"Ingress/site", "Ingress/other"}
    stage.stream_closed(stream_id=3)
    assert programmed(stage) == {}
    lines = [r.getMessage() for r in caplog.records]
    assert (
        "Ingress demo/other (other.yaml): 2 Envoys rejected cluster demo/greeter-b:50051: "
        "Proto constraint validation failed: bad value" in lines
    )
    assert "Ingress demo/other (other.yaml): Envoy accepted its configuration again" in lines


def test_an_ack_of_a_held_back_older_version_is_no_fix() -> None:
    stage = StatusStage()
    stage.built(site_translation())
    cluster = "demo/greeter-b:50051"
    stage.nacked(rejection(1, types.CLUSTER, {cluster: "v2"}))
    # State of the world resends the version the Envoy accepted before.
    stage.acked(
        Answer(
            stream_id=1,
            node_id="envoy-1",
            group="test",
            type_url=types.CLUSTER,
            resources={cluster: "v1", "demo/greeter-a:50051": "v1"},
            held_back=frozenset({cluster}),
        )
    )
    assert set(programmed(stage)) == {"Service/greeter-b", "Ingress/other"}
    stage.acked(answer(1, types.CLUSTER, {cluster: "v3"}))
    assert programmed(stage) == {}


async def test_a_rejected_route_config_is_reported_on_its_ingress_and_heals_when_fixed(
    ingress_under_test: Ingress,
    backends: dict[str, GreeterBackend],
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = ingress_under_test.config
    config.write(
        "services.yaml",
        service("greeter-a"),
        service("greeter-b"),
        endpoint_slice("greeter-a", backends["a"].port),
        endpoint_slice("greeter-b", backends["b"].port),
    )
    config.write(
        "ingress.yaml", ingress("main", [rule("a.example.com", ("/", "Prefix", "greeter-a"))])
    )
    control_plane = await ingress_under_test.start_control_plane()
    await (await ingress_under_test.start_envoy()).wait_live()
    await routes_to(ingress_under_test, "a.example.com", "a")
    caplog.set_level(logging.INFO, logger="xds_ingress")

    # Route config "http" comes from ingress.yaml; a status code Envoy's
    # validation refuses stands in for a user mistake that got through.
    good = control_plane.cache.current(DEFAULT_GROUP)
    assert good is not None
    resources = {url: dict(good.of_type(url).resources) for url in good.types}
    bad = route_pb2.RouteConfiguration()
    bad.CopyFrom(resources[types.ROUTE]["http"].message)
    bad.virtual_hosts[0].routes[0].ClearField("route")
    bad.virtual_hosts[0].routes[0].direct_response.status = 99
    resources[types.ROUTE]["http"] = make_resource("http", types.ROUTE, bad)
    control_plane.cache.set_snapshot(DEFAULT_GROUP, snapshot_from_resources(resources))

    def rejected() -> list[ir.Condition]:
        return [c for c in control_plane.status.conditions() if c.type == "Programmed"]

    await wait_until(lambda: bool(rejected()), timeout=15, message="a Programmed condition")
    (condition,) = rejected()
    assert condition.object == ref("Ingress", "main")
    assert (condition.status, condition.reason) == (ir.ConditionStatus.FALSE, "Rejected")
    # The reason, without the route config Envoy quotes before it.
    assert condition.message.startswith(
        "Envoy rejected route config http: Proto constraint validation failed"
    )
    assert "value must be inside range [200, 600)" in condition.message
    ingress_file = str(config.path / "ingress.yaml")
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("xds_ingress.status")]
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"Ingress demo/main ({ingress_file}): Envoy rejected route config http: "
    )
    assert "\n" not in lines[0]
    # Envoy stays on the last good route config.
    await routes_to(ingress_under_test, "a.example.com", "a")

    # The fix: a new version of the route config, ACKed, clears the condition.
    config.write(
        "ingress.yaml", ingress("main", [rule("a.example.com", ("/", "Prefix", "greeter-b"))])
    )
    await routes_to(ingress_under_test, "a.example.com", "b")
    await wait_until(lambda: not rejected(), timeout=15, message="the condition cleared")
    assert any(
        r.getMessage()
        == f"Ingress demo/main ({ingress_file}): Envoy accepted its configuration again"
        for r in caplog.records
    )


class PoisonedBuilder(ResourceBuilder):
    """Builds as usual, then breaks the clusters named in `poisoned`.

    Stands in for a user mistake that got through translation (see the module
    docstring): a negative connect timeout, which Envoy's validation refuses,
    kept in every build until `poisoned` is emptied (the fix).
    """

    def __init__(self) -> None:
        super().__init__()
        self.poisoned: set[str] = set()

    def build(self, config: ir.Config) -> Resources:
        built = super().build(config)
        for name in self.poisoned & set(built[types.CLUSTER]):
            bad = cluster_pb2.Cluster()
            bad.CopyFrom(built[types.CLUSTER][name])  # the built one is memoised: no edits
            bad.connect_timeout.seconds = -1
            built[types.CLUSTER][name] = bad
        return built


async def csds_cluster(under_test: Ingress, name: str) -> Any:
    """CSDS's status of cluster `name`, asked on the xDS port as an operator would."""
    assert under_test.control_plane is not None
    target = f"127.0.0.1:{under_test.control_plane.port}"
    channel = (
        grpc.aio.secure_channel(target, under_test.pki.channel_credentials())
        if under_test.mtls
        else grpc.aio.insecure_channel(target)
    )
    async with channel:
        stub = csds_pb2_grpc.ClientStatusDiscoveryServiceStub(channel)
        response = await stub.FetchClientStatus(csds_pb2.ClientStatusRequest(), timeout=5)
    (client,) = response.config
    return next(
        c for c in client.generic_xds_configs if c.type_url == types.CLUSTER and c.name == name
    )


async def test_a_rejected_cluster_is_held_back_while_other_changes_still_reach_envoy(
    ingress_under_test: Ingress,
    backends: dict[str, GreeterBackend],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In state of the world, every CDS response repeats every cluster: the bad
    one must not get the others' changes rejected with it."""
    config = ingress_under_test.config
    config.write(
        "services.yaml",
        *(service(f"greeter-{name}") for name in "abc"),
        *(endpoint_slice(f"greeter-{name}", backends[name].port) for name in "abc"),
    )
    config.write(
        "ingress.yaml",
        ingress(
            "main",
            [
                rule("a.example.com", ("/", "Prefix", "greeter-a")),
                rule("b.example.com", ("/", "Prefix", "greeter-b")),
            ],
        ),
    )
    control_plane = await ingress_under_test.start_control_plane()
    builder = PoisonedBuilder()
    # The pipeline's builder, swapped before the first build.
    monkeypatch.setattr(control_plane.pipeline, "_builder", builder)
    await (await ingress_under_test.start_envoy()).wait_live()
    await routes_to(ingress_under_test, "b.example.com", "b")

    bad = "demo/greeter-b:50051"
    builder.poisoned.add(bad)
    control_plane.pipeline.changed()

    def rejected() -> list[ir.Condition]:
        return [c for c in control_plane.status.conditions() if c.type == "Programmed"]

    await wait_until(lambda: bool(rejected()), timeout=15, message="a Programmed condition")
    assert {c.object for c in rejected()} == {ref("Service", "greeter-b"), ref("Ingress", "main")}
    assert all(f"rejected cluster {bad}" in c.message for c in rejected())
    nacked = await csds_cluster(ingress_under_test, bad)
    assert nacked.client_status == config_dump_shared_pb2.NACKED
    assert nacked.config_status == csds_pb2.ERROR
    assert "Expected positive duration" in nacked.error_state.details

    # A new backend, in a new cluster, while the bad one is still there.
    config.write(
        "more.yaml", ingress("more", [rule("c.example.com", ("/", "Prefix", "greeter-c"))])
    )
    await routes_to(ingress_under_test, "c.example.com", "c")
    # Envoy still runs the old greeter-b cluster, and that is still no fix.
    await routes_to(ingress_under_test, "b.example.com", "b")
    snapshot = control_plane.cache.current(DEFAULT_GROUP)
    assert snapshot is not None
    await wait_until(
        lambda: all(
            s.of_type(types.CLUSTER).acked_version == s.of_type(types.CLUSTER).sent_version
            for s in control_plane.xds.registry
        ),
        timeout=15,
        message="the response with greeter-c ACKed",
    )
    assert {c.object for c in rejected()} == {ref("Service", "greeter-b"), ref("Ingress", "main")}
    nacked = await csds_cluster(ingress_under_test, bad)
    assert nacked.client_status == config_dump_shared_pb2.NACKED
    assert nacked.error_state.version_info == snapshot.of_type(types.CLUSTER).resources[bad].version

    # The fix (here the cluster goes back to exactly what Envoy runs): applied,
    # ACKed at the snapshot's version, and the condition clears.
    builder.poisoned.clear()
    control_plane.pipeline.changed()
    await wait_until(lambda: not rejected(), timeout=15, message="the condition cleared")

    async def acked() -> bool:
        config = await csds_cluster(ingress_under_test, bad)
        return bool(
            config.client_status == config_dump_shared_pb2.ACKED
            and config.config_status == csds_pb2.SYNCED
        )

    await wait_until(acked, timeout=15, message="the fixed cluster ACKED in CSDS")
    await routes_to(ingress_under_test, "b.example.com", "b")
    await routes_to(ingress_under_test, "c.example.com", "c")
