"""Gateway API objects in, IR out: HTTPRoutes attached to our Gateways' HTTP listeners."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from test_grpcroute_translate import (
    BASE,
    GROUP,
    backend_ref,
    conditions,
    gateway,
    gateway_class,
    grpc_route,
    listener,
    messages,
    method,
    routes,
    routing,
    run,
    service,
)

from xds_ingress import ir

A = "default/a:50051"
B = "default/b:50051"
OK = {("Accepted", "True", "Accepted"), ("ResolvedRefs", "True", "ResolvedRefs")}


def http_route(
    name: str,
    *rules: Mapping[str, Any],
    ns: str = "default",
    parents: Sequence[Mapping[str, Any]] = ({"name": "gw"},),
    hostnames: Sequence[str] = (),
    created: str | None = None,
) -> dict[str, Any]:
    body = grpc_route(name, *rules, ns=ns, parents=parents, hostnames=hostnames, created=created)
    return {**body, "kind": "HTTPRoute"}


def http_rule(
    *matches: Mapping[str, Any], backends: Sequence[Mapping[str, Any]], **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"backendRefs": list(backends), **extra}
    if matches:
        body["matches"] = list(matches)
    return body


def path(value: str, type: str = "PathPrefix", **extra: Any) -> dict[str, Any]:
    return {"path": {"type": type, "value": value}, **extra}


def http_conditions(translation: ir.Translation, name: str) -> set[tuple[str, str, str]]:
    return conditions(translation, name, kind="HTTPRoute")


# --- matching -----------------------------------------------------------------


def test_path_matches_in_gateway_api_precedence() -> None:
    translation = run(
        *BASE,
        http_route(
            "r",
            http_rule(path("/"), backends=[backend_ref("a")]),
            http_rule(path("/api/"), backends=[backend_ref("b")]),
            http_rule(path("/api/v1"), backends=[backend_ref("a")]),
            http_rule(path("/api/v[0-9]+/items", "RegularExpression"), backends=[backend_ref("b")]),
            http_rule(path("/healthz", "Exact"), backends=[backend_ref("b")]),
        ),
    )
    assert routing(translation)["*"] == [
        ("Exact", "/healthz", B),
        ("RegularExpression", "/api/v[0-9]+/items", B),
        ("Prefix", "/api/v1", A),
        # A trailing slash means the path element, as Kubernetes' Prefix.
        ("Prefix", "/api", B),
        ("Prefix", "/", A),
    ]
    assert http_conditions(translation, "r") == OK


def test_a_rule_without_matches_takes_every_path() -> None:
    translation = run(*BASE, http_route("r", http_rule(backends=[backend_ref("a")])))
    assert routing(translation)["*"] == [("Prefix", "/", A)]


def test_method_and_header_matches_reach_the_route() -> None:
    translation = run(
        *BASE,
        http_route(
            "r",
            http_rule(
                path("/x", headers=[{"name": "X-Env", "value": "canary"}], method="POST"),
                path(
                    "/x", headers=[{"name": "x-v", "value": "v[0-9]", "type": "RegularExpression"}]
                ),
                backends=[backend_ref("a")],
            ),
        ),
    )
    first, second = routes(translation)
    assert first.headers == (
        ir.HeaderMatch(name=":method", value="POST"),
        ir.HeaderMatch(name="x-env", value="canary"),
    )
    assert second.headers == (ir.HeaderMatch(name="x-v", value="v[0-9]", regex=True),)
    assert first.origin == ir.ObjectRef(kind="HTTPRoute", namespace="default", name="r")


def test_method_before_headers_and_more_headers_first_then_the_older_route() -> None:
    header = {"name": "x-a", "value": "1"}
    translation = run(
        *BASE,
        http_route(
            "young",
            http_rule(
                path("/p", headers=[header, {"name": "x-b", "value": "2"}]),
                backends=[backend_ref("a")],
            ),
            created="2024-02-01T00:00:00Z",
        ),
        http_route(
            "old",
            http_rule(path("/p", headers=[header]), backends=[backend_ref("b")]),
            http_rule(path("/p", method="GET"), backends=[backend_ref("a")]),
            http_rule(
                path("/p", headers=[header, {"name": "x-c", "value": "3"}]),
                backends=[backend_ref("b")],
            ),
            created="2024-01-01T00:00:00Z",
        ),
    )
    assert [(r.name, len(r.headers)) for r in routes(translation)] == [
        ("default/old/spec.rules[1].matches[0]", 1),  # a method match
        ("default/old/spec.rules[2].matches[0]", 2),  # two headers, the older route
        ("default/young/spec.rules[0].matches[0]", 2),
        ("default/old/spec.rules[0].matches[0]", 1),
    ]


def test_request_header_modifier_reaches_the_route() -> None:
    modifier = {
        "type": "RequestHeaderModifier",
        "requestHeaderModifier": {
            "set": [{"name": "X-Set", "value": "1"}],
            "add": [{"name": "x-add", "value": "2"}],
            "remove": ["X-Gone"],
        },
    }
    translation = run(
        *BASE, http_route("r", http_rule(backends=[backend_ref("a")], filters=[modifier]))
    )
    (route,) = routes(translation)
    assert route.request_headers == ir.HeaderMutation(
        set=(("x-set", "1"),), add=(("x-add", "2"),), remove=("x-gone",)
    )


@pytest.mark.parametrize(
    "filter_body",
    [
        {"type": "RequestRedirect", "requestRedirect": {"scheme": "https"}},
        {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"set": []}},
        {"type": "URLRewrite", "urlRewrite": {"hostname": "x"}},
    ],
)
def test_filters_not_served_refuse_their_rule_only(filter_body: dict[str, Any]) -> None:
    translation = run(
        *BASE,
        http_route(
            "r",
            http_rule(path("/filtered"), backends=[backend_ref("b")], filters=[filter_body]),
            http_rule(path("/"), backends=[backend_ref("a")]),
        ),
    )
    assert routing(translation)["*"] == [("Prefix", "/", A)]
    assert ("Accepted", "False", "UnsupportedValue") in http_conditions(translation, "r")
    assert "spec.rules[0].filters[0]" in messages(translation, "r")


def test_query_parameter_matches_are_refused_not_ignored() -> None:
    translation = run(
        *BASE,
        http_route(
            "r",
            http_rule(
                path("/q", queryParams=[{"name": "v", "value": "1"}]),
                path("/other"),
                backends=[backend_ref("a")],
            ),
        ),
    )
    assert routing(translation)["*"] == [("Prefix", "/other", A)]
    assert "spec.rules[0].matches[0].queryParams" in messages(translation, "r")


@pytest.mark.parametrize(
    ("match", "where"),
    [
        (path("(unclosed", "RegularExpression"), "path.value"),
        (path("(?=a)b", "RegularExpression"), "path.value"),
        (path("no-slash"), "path"),
        (path("/a", "Prefix"), "path.type"),
        (path("/a?b=c", "Exact"), "path"),
        (path("/a", method="FETCH"), "method"),
        (path("/a", headers=[{"name": "bad name", "value": "x"}]), "headers[0].name"),
    ],
)
def test_bad_matches_are_refused_with_where_they_are(match: dict[str, Any], where: str) -> None:
    translation = run(
        *BASE, http_route("r", http_rule(match, path("/fine"), backends=[backend_ref("a")]))
    )
    assert routing(translation)["*"] == [("Prefix", "/fine", A)]
    assert ("Accepted", "False", "UnsupportedValue") in http_conditions(translation, "r")
    assert f"spec.rules[0].matches[0].{where}" in messages(translation, "r")


# --- backends -----------------------------------------------------------------


def test_weighted_backends_split() -> None:
    translation = run(
        *BASE,
        http_route(
            "r", http_rule(backends=[backend_ref("a", weight=3), backend_ref("b", weight=1)])
        ),
    )
    assert routing(translation)["*"] == [("Prefix", "/", f"{A}=3 {B}=1")]


def test_the_backend_speaks_what_its_service_port_says() -> None:
    h2c = {
        **service("g"),
        "spec": {"ports": [{"name": "grpc", "port": 50051, "appProtocol": "kubernetes.io/h2c"}]},
    }
    translation = run(
        *BASE, h2c, http_route("r", http_rule(backends=[backend_ref("g"), backend_ref("a")]))
    )
    protocols = {b.name: b.protocol for b in translation.config.backends}
    assert protocols == {"default/g:50051": ir.UpstreamProtocol.H2C, A: ir.UpstreamProtocol.HTTP1}


def test_missing_and_foreign_backends() -> None:
    grant = {
        "apiVersion": f"{GROUP}/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "grant", "namespace": "granted"},
        "spec": {
            "from": [{"group": GROUP, "kind": "HTTPRoute", "namespace": "default"}],
            "to": [{"group": "", "kind": "Service"}],
        },
    }
    translation = run(
        *BASE,
        service("s", ns="granted"),
        service("s", ns="private"),
        grant,
        http_route(
            "r",
            http_rule(path("/missing"), backends=[backend_ref("nope")]),
            http_rule(path("/private"), backends=[backend_ref("s", namespace="private")]),
            http_rule(path("/granted"), backends=[backend_ref("s", namespace="granted")]),
            http_rule(path("/kind"), backends=[backend_ref("a", kind="Bucket", group="x.io")]),
            http_rule(path("/none"), backends=[]),
        ),
    )
    got = {p: t for _, p, t in routing(translation)["*"]}
    assert got == {
        "/missing": "500 xds-ingress: BackendNotFound",
        "/private": "500 xds-ingress: RefNotPermitted",
        "/granted": "granted/s:50051",
        "/kind": "500 xds-ingress: InvalidKind",
        # As the Gateway API says: 404 without backendRefs, 500 when none can be used.
        "/none": "404 xds-ingress: NoBackends",
    }
    found = http_conditions(translation, "r")
    assert {
        ("ResolvedRefs", "False", "BackendNotFound"),
        ("ResolvedRefs", "False", "RefNotPermitted"),
        ("ResolvedRefs", "False", "InvalidKind"),
        ("Accepted", "True", "Accepted"),
    } <= found


# --- attaching ----------------------------------------------------------------


def test_hostnames_section_names_and_allowed_kinds() -> None:
    translation = run(
        gateway_class(),
        gateway(
            "gw",
            listener("web", hostname="*.example.com"),
            {
                **listener("grpc-only", hostname="grpc.example.com"),
                "allowedRoutes": {"kinds": [{"kind": "GRPCRoute"}]},
            },
        ),
        service("a"),
        http_route(
            "r",
            http_rule(backends=[backend_ref("a")]),
            hostnames=["www.example.com", "www.other.org"],
        ),
        http_route(
            "kinds",
            http_rule(backends=[backend_ref("a")]),
            parents=[{"name": "gw", "sectionName": "grpc-only"}],
        ),
        http_route("nohost", http_rule(backends=[backend_ref("a")]), hostnames=["x.other.org"]),
    )
    assert routing(translation) == {"www.example.com": [("Prefix", "/", A)]}
    assert ("Accepted", "False", "NotAllowedByListeners") in http_conditions(translation, "kinds")
    assert ("Accepted", "False", "NoMatchingListenerHostname") in http_conditions(
        translation, "nohost"
    )


def test_grpcroutes_match_before_httproutes_on_a_shared_host() -> None:
    translation = run(
        *BASE,
        http_route("web", http_rule(backends=[backend_ref("a")]), created="2020-01-01T00:00:00Z"),
        grpc_route(
            "grpc",
            {"matches": [method("pkg.Svc")], "backendRefs": [backend_ref("b")]},
        ),
    )
    assert routing(translation)["*"] == [
        ("StringPrefix", "/pkg.Svc/", "default/b:50051/h2c"),
        ("Prefix", "/", A),
    ]


def test_httproutes_of_other_gateways_are_left_alone() -> None:
    translation = run(
        *BASE, http_route("r", http_rule(backends=[backend_ref("a")]), parents=[{"name": "theirs"}])
    )
    assert routing(translation) == {}
    assert http_conditions(translation, "r") == set()


def test_garbage_never_raises() -> None:
    for spec in (
        {"rules": "x"},
        {"rules": [{"matches": "x"}]},
        {"rules": [{"matches": [{"path": "x"}]}]},
        {"rules": [{"matches": [{"path": {"type": 3, "value": 4}, "headers": [3], "method": []}]}]},
        {"rules": [{"backendRefs": [{"name": 3, "port": "x", "weight": -1}]}]},
        {"rules": [{"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": 3}]}]},
        {"hostnames": [3]},
    ):
        body = {
            "apiVersion": f"{GROUP}/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "g", "namespace": "default"},
            "spec": {"parentRefs": [{"name": "gw"}], **spec},
        }
        translation = run(*BASE, body)
        assert translation.config.listeners
