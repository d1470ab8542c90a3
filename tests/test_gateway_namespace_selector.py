"""Gateway listeners with allowedRoutes.namespaces `from: Selector`: translation and status.

The route's Namespace labels decide (as the store keeps them: name and
labels only), plus the `kubernetes.io/metadata.name` label the API server
sets on every Namespace. A listener whose selector is missing or invalid
takes no routes and says why.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from test_grpcroute_translate import (
    OK,
    backend_ref,
    conditions,
    gateway,
    gateway_class,
    grpc_route,
    grpc_rule,
    listener,
    messages,
    routing,
    run,
    service,
)

from xds_ingress import ir
from xds_ingress.sources.file import FileSource
from xds_ingress.sources.objects import parse_object
from xds_ingress.status import gateway_api
from xds_ingress.status.gateway_planner import GatewayApiPlanner
from xds_ingress.store import Change, Store
from xds_ingress.translate import ListenerSettings, translate

NOT_ALLOWED = ("Accepted", "False", "NotAllowedByListeners")


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def selecting(selector: Any, *, name: str = "http", hostname: str | None = None) -> dict[str, Any]:
    body = listener(name, hostname=hostname)
    body["allowedRoutes"] = {"namespaces": {"from": "Selector", "selector": selector}}
    return body


def route_in(
    ns: str, name: str = "r", *, section: str | None = None, **extra: Any
) -> dict[str, Any]:
    parent = {"name": "gw", "namespace": "default"}
    if section is not None:
        parent["sectionName"] = section
    return grpc_route(
        name, grpc_rule(backends=[backend_ref("a")]), ns=ns, parents=[parent], **extra
    )


def a_in(ns: str) -> str:
    return f"{ns}/a:50051/h2c"


def served(translation: ir.Translation) -> dict[str, list[str]]:
    """{host: [backend]} on the plain HTTP listener."""
    return {
        host: [backend for _, _, backend in found] for host, found in routing(translation).items()
    }


def listener_conditions(translation: ir.Translation) -> list[tuple[str, str, str]]:
    """(type, reason, message) of the Gateway's findings about its listeners."""
    return [
        (c.type, c.reason, c.message)
        for c in translation.conditions
        if c.object.kind == "Gateway" and c.message.startswith("spec.listeners[")
    ]


# --- translation --------------------------------------------------------------


def test_a_selector_takes_routes_from_the_namespaces_it_matches_only() -> None:
    translation = run(
        gateway_class(),
        gateway("gw", selecting({"matchLabels": {"shared-gateway": "yes"}})),
        namespace("default"),
        namespace("team-a", **{"shared-gateway": "yes"}),
        namespace("team-b", **{"shared-gateway": "no"}),
        service("a", ns="team-a"),
        service("a", ns="team-b"),
        route_in("team-a", hostnames=["a.example.com"]),
        route_in("team-b", hostnames=["b.example.com"]),
    )
    assert served(translation) == {"a.example.com": [a_in("team-a")]}
    assert conditions(translation, "r", ns="team-a") == OK
    assert NOT_ALLOWED in conditions(translation, "r", ns="team-b")
    assert (
        "listener http: namespace team-b does not match its allowedRoutes.namespaces.selector"
        in messages(translation, "r")
    )
    assert listener_conditions(translation) == []


def test_the_gateways_own_namespace_attaches_only_if_it_matches_too() -> None:
    bodies = (
        gateway_class(),
        gateway("gw", selecting({"matchExpressions": [{"key": "tier", "operator": "Exists"}]})),
        service("a"),
        route_in("default"),
    )
    assert NOT_ALLOWED in conditions(run(*bodies, namespace("default")), "r")
    translation = run(*bodies, namespace("default", tier="edge"))
    assert conditions(translation, "r") == OK
    assert served(translation) == {"*": [a_in("default")]}


def test_the_namespace_name_label_works_without_namespace_objects() -> None:
    """The API server labels every Namespace with its name; a folder need not say so."""
    translation = run(
        gateway_class(),
        gateway(
            "gw",
            selecting(
                {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "In",
                            "values": ["team-a", "team-c"],
                        }
                    ]
                }
            ),
        ),
        service("a", ns="team-a"),
        service("a", ns="team-b"),
        route_in("team-a", hostnames=["a.example.com"]),
        route_in("team-b", hostnames=["b.example.com"]),
    )
    assert set(routing(translation)) == {"a.example.com"}
    assert NOT_ALLOWED in conditions(translation, "r", ns="team-b")


def test_a_refused_route_is_told_which_rule_refused_it() -> None:
    http_only = listener("web", hostname="web.example.com", allowed_from="All")
    http_only["allowedRoutes"]["kinds"] = [{"kind": "HTTPRoute"}]
    translation = run(
        gateway_class(),
        gateway("gw", listener("http"), http_only),
        service("a", ns="team-a"),
        route_in("team-a"),
    )
    assert NOT_ALLOWED in conditions(translation, "r", ns="team-a")
    said = messages(translation, "r")
    assert "listener http: it takes routes from namespace default only" in said
    assert "listener web: its allowedRoutes.kinds does not include GRPCRoute" in said


def test_an_empty_selector_takes_every_namespace() -> None:
    translation = run(
        gateway_class(),
        gateway("gw", selecting({})),
        service("a", ns="team-b"),
        route_in("team-b"),
    )
    assert conditions(translation, "r", ns="team-b") == OK


def test_not_in_and_does_not_exist_take_namespaces_without_the_label() -> None:
    translation = run(
        gateway_class(),
        gateway(
            "gw",
            selecting(
                {
                    "matchExpressions": [
                        {"key": "env", "operator": "NotIn", "values": ["prod"]},
                        {"key": "quarantined", "operator": "DoesNotExist"},
                    ]
                }
            ),
        ),
        namespace("unlabelled"),
        namespace("prod", env="prod"),
        namespace("dev", env="dev", quarantined="true"),
        *(service("a", ns=ns) for ns in ("unlabelled", "prod", "dev")),
        *(route_in(ns, hostnames=[f"{ns}.example.com"]) for ns in ("unlabelled", "prod", "dev")),
    )
    assert set(routing(translation)) == {"unlabelled.example.com"}


def test_an_invalid_selector_takes_no_routes_and_the_listener_says_why() -> None:
    translation = run(
        gateway_class(),
        gateway(
            "gw",
            selecting({"matchExpressions": [{"key": "env", "operator": "Equals"}]}),
            # The Gateway's other listener is unaffected.
            listener("open", hostname="open.example.com", allowed_from="All"),
        ),
        namespace("team-a", env="prod"),
        service("a", ns="team-a"),
        service("a"),
        route_in("team-a"),
        route_in("default", "same", section="http"),
    )
    ((kind, reason, message),) = listener_conditions(translation)
    assert (kind, reason) == ("Accepted", "UnsupportedValue")
    assert message.startswith(
        "spec.listeners[0] (http): allowedRoutes.namespaces.selector is invalid: "
        "matchExpressions[0]: operator 'Equals' is not one of In, NotIn, Exists, DoesNotExist"
    )
    # Neither a route of another namespace nor one of its own: only the All listener serves.
    assert set(routing(translation)) == {"open.example.com"}
    assert "listener http: its allowedRoutes.namespaces.selector is unusable" in messages(
        translation, "same"
    )


def test_from_selector_without_a_selector_takes_no_routes() -> None:
    body = listener("http")
    body["allowedRoutes"] = {"namespaces": {"from": "Selector"}}
    translation = run(gateway_class(), gateway("gw", body), service("a"), route_in("default"))
    ((kind, reason, message),) = listener_conditions(translation)
    assert (kind, reason) == ("Accepted", "UnsupportedValue")
    assert "selector is required" in message
    assert NOT_ALLOWED in conditions(translation, "r")


def fill_with_a_selected_route(store: Store) -> None:
    """A Gateway selecting namespaces labelled gateway=shared; team-a is, with a route."""
    store.replace_all(
        [
            parse_object(body)
            for body in (
                gateway_class(),
                gateway("gw", selecting({"matchLabels": {"gateway": "shared"}})),
                namespace("team-a", gateway="shared"),
                service("a", ns="team-a"),
                route_in("team-a"),
            )
        ],
        origin="test",
    )


def test_relabelling_a_namespace_moves_its_routes() -> None:
    """One store, as the sources feed it: a label change rebuilds, and the route follows."""
    store = Store()
    changes: list[Change] = []
    store.subscribe(changes.append)
    settings = ListenerSettings(listen_address="127.0.0.1", http_port=8080, https_port=8443)
    fill_with_a_selected_route(store)
    assert set(routing(translate(store.view(), settings=settings))) == {"*"}

    changes.clear()
    store.apply(parse_object(namespace("team-a", gateway="private")), origin="test")
    assert [change.kinds for change in changes] == [{"Namespace"}]
    translation = translate(store.view(), settings=settings)
    assert routing(translation) == {}
    assert NOT_ALLOWED in conditions(translation, "r", ns="team-a")


# --- the store keeps names and labels -------------------------------------------


def test_the_store_keeps_only_a_namespaces_name_and_labels() -> None:
    store = Store()
    changes: list[Change] = []
    store.subscribe(changes.append)
    full: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "team-a",
            "resourceVersion": "10",
            "labels": {"env": "prod"},
            "annotations": {"owner": "payments"},
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }
    store.apply(parse_object(full), origin="test")
    view = store.view()
    kept = view.get("Namespace", "", "team-a")
    assert kept is not None
    assert dict(kept.body) == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "team-a", "labels": {"env": "prod"}},
    }
    assert view.namespace_labels("team-a") == {"env": "prod"}
    assert view.namespace_labels("never-seen") == {}

    # Only a change of labels is a change: a new resourceVersion, status or
    # annotation costs no rebuild.
    changes.clear()
    full["metadata"]["resourceVersion"] = "11"
    full["metadata"]["annotations"] = {"owner": "search"}
    full["status"] = {"phase": "Terminating"}
    store.apply(parse_object(full), origin="test")
    assert changes == []
    full["metadata"]["labels"] = {"env": "dev"}
    store.apply(parse_object(full), origin="test")
    assert [change.kinds for change in changes] == [{"Namespace"}]
    assert store.view().namespace_labels("team-a") == {"env": "dev"}


def test_the_file_source_reads_namespaces(tmp_path: Path) -> None:
    (tmp_path / "objects.yaml").write_text(
        textwrap.dedent(
            """\
            apiVersion: v1
            kind: Namespace
            metadata: {name: team-a, labels: {gateway: shared}}
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: Gateway
            metadata: {name: gw, namespace: default}
            spec:
              gatewayClassName: any
              listeners:
              - name: http
                port: 80
                protocol: HTTP
                allowedRoutes:
                  namespaces:
                    from: Selector
                    selector: {matchLabels: {gateway: shared}}
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: a, namespace: team-a}
            spec: {ports: [{name: grpc, port: 50051, appProtocol: kubernetes.io/h2c}]}
            ---
            apiVersion: gateway.networking.k8s.io/v1
            kind: GRPCRoute
            metadata: {name: r, namespace: team-a}
            spec:
              parentRefs: [{name: gw, namespace: default}]
              rules: [{backendRefs: [{name: a, port: 50051}]}]
            """
        )
    )
    found = FileSource(tmp_path).scan()
    assert found is not None
    store = Store()
    store.replace_all(found, origin="file")
    settings = ListenerSettings(
        listen_address="127.0.0.1", http_port=8080, https_port=8443, claim_classless=True
    )
    translation = translate(store.view(), settings=settings)
    assert served(translation) == {"*": ["team-a/a:50051"]}


# --- status: attachedRoutes follows the same rule --------------------------------


def test_attached_routes_count_only_routes_of_selected_namespaces() -> None:
    gw = parse_object(gateway("gw", selecting({"matchLabels": {"gateway": "shared"}})))
    accepted = (
        ir.Condition(
            object=ir.ObjectRef(kind="GRPCRoute", namespace="team-a", name="r"),
            type="Accepted",
            status=ir.ConditionStatus.TRUE,
            reason="Accepted",
            message="",
        ),
    )
    route = parse_object(route_in("team-a"))
    labels: dict[str, Mapping[str, str]] = {"team-a": {"gateway": "shared"}}
    specs = gateway_api.listener_specs(gw)
    assert gateway_api.attached_routes(
        gw, specs, [(route, accepted)], labels=lambda ns: labels.get(ns, {})
    ) == {"http": 1}
    labels["team-a"] = {"gateway": "private"}
    assert (
        gateway_api.attached_routes(
            gw, specs, [(route, accepted)], labels=lambda ns: labels.get(ns, {})
        )
        == {}
    )


def test_the_planner_reads_namespace_labels_from_the_store() -> None:
    store = Store()
    fill_with_a_selected_route(store)
    settings = ListenerSettings(listen_address="127.0.0.1", http_port=8080, https_port=8443)

    def lookup(ref: ir.ObjectRef) -> Any:
        return store.view().get(ref.kind, ref.namespace, ref.name)

    planner = GatewayApiPlanner(lookup=lookup, controller=settings.controller_name)

    def attached() -> object:
        planner.update(translate(store.view(), settings=settings).conditions)
        gw = ir.ObjectRef(kind="Gateway", namespace="default", name="gw")
        status = planner.wanted(gw, existing={}, now="2026-01-01T00:00:00Z")
        assert status is not None
        ((entry),) = status["listeners"]
        return entry["attachedRoutes"]

    assert attached() == 1
    store.apply(parse_object(namespace("team-a", gateway="private")), origin="test")
    assert attached() == 0
