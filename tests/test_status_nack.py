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

import pytest
from envoy.config.route.v3 import route_pb2
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
