"""Gateway API status from translate's conditions (xds_ingress/status/gateway_api.py), in memory.

The end-to-end cases (a real API server, a real Envoy) are in
test_gateway_kubernetes.py; these are the splits that are awkward to reach
there: per parentRef, per listener, and what a merge keeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xds_ingress import ir
from xds_ingress.sources.objects import KubeObject, parse_object
from xds_ingress.status import gateway_api
from xds_ingress.status.gateway_api import Wanted
from xds_ingress.status.gateway_planner import GatewayApiPlanner
from xds_ingress.store import Store
from xds_ingress.translate import translate
from xds_ingress.translate.settings import ListenerSettings

CONTROLLER = "xds-ingress.io/controller"
NOW = "2026-11-23T12:00:00Z"
EARLIER = "2026-01-01T00:00:00Z"


def route(*parents: Mapping[str, Any]) -> KubeObject:
    return parse_object(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GRPCRoute",
            "metadata": {"name": "r", "namespace": "ns", "generation": 3},
            "spec": {"parentRefs": list(parents), "hostnames": ["a.example.com"]},
        }
    )


def gateway(*listeners: Mapping[str, Any]) -> KubeObject:
    return parse_object(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "ns", "generation": 2},
            "spec": {"gatewayClassName": "ours", "listeners": list(listeners)},
        }
    )


def finding(
    obj: KubeObject, type: str, reason: str, message: str, ok: bool = False
) -> ir.Condition:
    status = ir.ConditionStatus.TRUE if ok else ir.ConditionStatus.FALSE
    return ir.Condition(object=obj.ref, type=type, status=status, reason=reason, message=message)


def test_a_rejection_names_its_parent_and_the_others_stay_accepted() -> None:
    r = route({"name": "gw"}, {"name": "other", "sectionName": "https"})
    found = [
        finding(
            r, "Accepted", "NotAllowedByListeners", "spec.parentRefs[1] (Gateway ns/other): no"
        ),
        finding(r, "ResolvedRefs", "ResolvedRefs", "every backendRef resolved", ok=True),
    ]
    entries = gateway_api.route_parents(
        r, conditions=found, ours=lambda _ns, _name: True, controller=CONTROLLER
    )
    assert [parent["name"] for parent, _ in entries] == ["gw", "other"]
    (first_accepted, first_resolved), (second_accepted, _) = (c for _, c in entries)
    assert (first_accepted.status, first_accepted.reason) == (ir.ConditionStatus.TRUE, "Accepted")
    assert first_resolved.status is ir.ConditionStatus.TRUE
    assert (second_accepted.status, second_accepted.reason) == (
        ir.ConditionStatus.FALSE,
        "NotAllowedByListeners",
    )


def test_a_finding_about_the_whole_route_applies_to_every_parent() -> None:
    r = route({"name": "gw"}, {"name": "gw2"})
    found = [
        finding(r, "Accepted", "UnsupportedValue", "spec.rules[0].matches[0]: bad regex"),
        finding(r, "ResolvedRefs", "BackendNotFound", "spec.rules[0].backendRefs[0]: missing"),
    ]
    entries = gateway_api.route_parents(
        r, conditions=found, ours=lambda _ns, _name: True, controller=CONTROLLER
    )
    for _parent, (accepted, resolved) in entries:
        assert (accepted.status, accepted.reason) == (ir.ConditionStatus.FALSE, "UnsupportedValue")
        assert (resolved.status, resolved.reason) == (ir.ConditionStatus.FALSE, "BackendNotFound")


def test_only_parents_on_our_gateways_get_entries() -> None:
    r = route({"name": "gw"}, {"name": "theirs"}, {"name": "svc", "kind": "Service", "group": ""})
    found = [finding(r, "Accepted", "Accepted", "ok", ok=True)]
    entries = gateway_api.route_parents(
        r, conditions=found, ours=lambda _ns, name: name != "theirs", controller=CONTROLLER
    )
    assert [parent["name"] for parent, _ in entries] == ["gw"]
    # Not ours at all (translate said nothing about it): no entries.
    assert (
        gateway_api.route_parents(
            r, conditions=[], ours=lambda _ns, _n: True, controller=CONTROLLER
        )
        == []
    )


def test_merging_keeps_other_controllers_and_unchanged_transition_times() -> None:
    theirs = {"parentRef": {"name": "x"}, "controllerName": "example.com/other", "conditions": []}
    stale = {"parentRef": {"name": "gone"}, "controllerName": CONTROLLER, "conditions": []}
    mine = {
        "parentRef": {"name": "gw"},
        "controllerName": CONTROLLER,
        "conditions": [
            {"type": "Accepted", "status": "True", "lastTransitionTime": EARLIER},
            {"type": "ResolvedRefs", "status": "True", "lastTransitionTime": EARLIER},
        ],
    }
    wanted = [
        (
            {"name": "gw"},
            (
                Wanted("Accepted", ir.ConditionStatus.TRUE, "Accepted", "ok"),
                Wanted("ResolvedRefs", ir.ConditionStatus.FALSE, "BackendNotFound", "missing"),
            ),
        )
    ]
    status = gateway_api.merged_route_status(
        {"parents": [theirs, stale, mine]},
        wanted,
        controller=CONTROLLER,
        generation=3,
        now=NOW,
    )
    assert status["parents"][0] == theirs
    assert len(status["parents"]) == 2, "our entry for a parentRef that went is dropped"
    conditions = {c["type"]: c for c in status["parents"][1]["conditions"]}
    assert conditions["Accepted"]["lastTransitionTime"] == EARLIER
    assert conditions["ResolvedRefs"]["lastTransitionTime"] == NOW
    assert {c["observedGeneration"] for c in conditions.values()} == {3}


def test_listener_problems_split_into_its_conditions() -> None:
    gw = gateway(
        {"name": "web", "port": 80, "protocol": "HTTP"},
        {"name": "tcp", "port": 9000, "protocol": "TCP"},
        {
            "name": "odd",
            "port": 81,
            "protocol": "HTTP",
            "allowedRoutes": {"kinds": [{"kind": "TCPRoute"}]},
        },
    )
    found = [
        finding(gw, "Accepted", "UnsupportedProtocol", "spec.listeners[1] (tcp): protocol TCP"),
    ]
    specs = gateway_api.listener_specs(gw)
    states = [(spec, gateway_api.listener_state(spec, found, nacked=[])) for spec in specs]
    web, tcp, odd = (state for _, state in states)
    assert web.usable and web.programmed.status is ir.ConditionStatus.TRUE
    assert (tcp.accepted.status, tcp.accepted.reason) == (
        ir.ConditionStatus.FALSE,
        "UnsupportedProtocol",
    )
    assert (tcp.programmed.status, tcp.programmed.reason) == (ir.ConditionStatus.FALSE, "Invalid")
    assert not tcp.usable
    assert (odd.resolved_refs.status, odd.resolved_refs.reason) == (
        ir.ConditionStatus.FALSE,
        "InvalidRouteKinds",
    )
    assert not odd.usable, "no kind it allows is served"
    accepted, programmed = gateway_api.gateway_conditions(found, states)
    # Some listeners are fine: the Gateway is accepted, and says which are not.
    assert (accepted.status, accepted.reason) == (ir.ConditionStatus.TRUE, "ListenersNotValid")
    assert programmed.status is ir.ConditionStatus.TRUE


def test_attached_routes_count_accepted_parents_per_listener() -> None:
    gw = gateway(
        {"name": "a", "port": 80, "protocol": "HTTP", "hostname": "*.example.com"},
        {"name": "b", "port": 80, "protocol": "HTTP", "hostname": "b.example.org"},
    )
    on_a = route({"name": "gw", "sectionName": "a"})
    everywhere = route({"name": "gw"})
    accepted = [finding(on_a, "Accepted", "Accepted", "ok", ok=True)]
    attached = gateway_api.attached_routes(
        gw,
        gateway_api.listener_specs(gw),
        [(on_a, accepted), (everywhere, accepted)],
    )
    # Both routes are named "r": one route, attached to a; b's hostname does not match.
    assert attached == {"a": 1}
    rejected = [finding(on_a, "Accepted", "NoMatchingParent", "spec.parentRefs[0] (x): no")]
    assert gateway_api.attached_routes(gw, gateway_api.listener_specs(gw), [(on_a, rejected)]) == {}


def test_an_https_listener_without_a_servable_certificate_is_not_programmed() -> None:
    """From translate's findings: a listener whose only certificateRef is missing."""
    gw = gateway(
        {"name": "web", "port": 80, "protocol": "HTTP"},
        {
            "name": "secure",
            "port": 443,
            "protocol": "HTTPS",
            "tls": {"mode": "Terminate", "certificateRefs": [{"name": "missing"}]},
        },
    )
    store = Store()
    store.apply(gw, origin="test")
    store.apply(
        parse_object(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "GatewayClass",
                "metadata": {"name": "ours"},
                "spec": {"controllerName": CONTROLLER},
            }
        ),
        origin="test",
    )
    settings = ListenerSettings(
        listen_address="127.0.0.1",
        http_port=8080,
        https_port=8443,
        min_tls_version=ir.TlsVersion.TLS1_2,
        claim_classless=True,
    )
    found = [
        condition
        for condition in translate(store.view(), settings=settings).conditions
        if condition.object == gw.ref
    ]
    specs = gateway_api.listener_specs(gw)
    states = [(spec, gateway_api.listener_state(spec, found, nacked=[])) for spec in specs]
    web, secure = (state for _, state in states)
    assert web.usable and web.programmed.status is ir.ConditionStatus.TRUE
    assert secure.accepted.status is ir.ConditionStatus.TRUE
    assert (secure.resolved_refs.status, secure.resolved_refs.reason) == (
        ir.ConditionStatus.FALSE,
        "InvalidCertificateRef",
    )
    assert (secure.programmed.status, secure.programmed.reason) == (
        ir.ConditionStatus.FALSE,
        "Invalid",
    )
    assert not secure.usable
    accepted, _ = gateway_api.gateway_conditions(found, states)
    assert (accepted.status, accepted.reason) == (ir.ConditionStatus.TRUE, "ListenersNotValid")


def test_routes_left_with_an_entry_of_ours_after_a_restart_are_cleaned() -> None:
    """Nobody remembers them: they are found by their status, given the routes."""

    def parent(gateway: str, controller: str = CONTROLLER) -> dict[str, Any]:
        return {
            "parentRef": {"name": gateway},
            "controllerName": controller,
            "conditions": [
                {
                    "type": "Accepted",
                    "status": "True",
                    "reason": "Accepted",
                    "message": "",
                    "lastTransitionTime": EARLIER,
                }
            ],
        }

    def named(name: str, parents: list[dict[str, Any]]) -> KubeObject:
        return parse_object(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "GRPCRoute",
                "metadata": {"name": name, "namespace": "ns"},
                # Its Gateway is another controller's now (or gone).
                "spec": {"parentRefs": [{"name": "theirs"}]},
                "status": {"parents": parents},
            }
        )

    theirs = parent("theirs", controller="example.com/other")
    moved = named("moved", [parent("gw"), theirs])
    never = named("never", [theirs])
    routes = {route.ref: route for route in (moved, never)}
    planner = GatewayApiPlanner(
        lookup=routes.get, controller=CONTROLLER, routes=lambda: routes.values()
    )
    planner.update(())
    assert planner.refs() == [moved.ref]
    assert planner.differs_in_store(moved.ref)
    cleaned = planner.wanted(moved.ref, existing=gateway_api.plain(moved.body["status"]), now=NOW)
    assert cleaned == {"parents": [theirs]}
    # Written: it no longer carries one, so it is not found again.
    planner.written(moved.ref)
    routes[moved.ref] = named("moved", [theirs])
    planner.update(())
    assert planner.refs() == []
    # Without `routes` (as before): nothing is found.
    blind = GatewayApiPlanner(lookup=routes.get, controller=CONTROLLER)
    routes[moved.ref] = moved
    blind.update(())
    assert blind.refs() == []
