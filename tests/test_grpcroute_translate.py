"""Gateway API objects in, IR out: GRPCRoutes attached to our Gateways' HTTP listeners."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from xds_ingress import ir
from xds_ingress.sources.objects import parse_object
from xds_ingress.store import Store
from xds_ingress.translate import ListenerSettings, translate
from xds_ingress.translate.gateways import intersect_hostnames
from xds_ingress.translate.re2 import check_re2

# Not claim_classless: Gateways are ours through their GatewayClass.
SETTINGS = ListenerSettings(listen_address="127.0.0.1", http_port=8080, https_port=8443)
# As for the file source: every Gateway in the folder is ours.
CLAIM_ALL = ListenerSettings(
    listen_address="127.0.0.1", http_port=8080, https_port=8443, claim_classless=True
)
GROUP = "gateway.networking.k8s.io"
GREETER = "xds_ingress.demo.v1.Greeter"
SVC_PORT = {"name": "app", "port": 50051}  # nothing says gRPC


def service(name: str, *, ns: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": [SVC_PORT]},
    }


def gateway_class(
    name: str = "xds", controller: str = "xds-ingress.io/controller"
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "GatewayClass",
        "metadata": {"name": name},
        "spec": {"controllerName": controller},
    }


def listener(
    name: str = "http",
    *,
    hostname: str | None = None,
    protocol: str = "HTTP",
    allowed_from: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "port": 80, "protocol": protocol}
    if hostname is not None:
        body["hostname"] = hostname
    if allowed_from is not None:
        body["allowedRoutes"] = {"namespaces": {"from": allowed_from}}
    return body


def gateway(
    name: str = "gw",
    *listeners: dict[str, Any],
    ns: str = "default",
    class_name: str = "xds",
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"gatewayClassName": class_name, "listeners": list(listeners) or [listener()]},
    }


def backend_ref(
    name: str, *, port: int = 50051, weight: int | None = None, **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "port": port, **extra}
    if weight is not None:
        body["weight"] = weight
    return body


def method(
    service: str | None = None, name: str | None = None, *, type: str = "Exact"
) -> dict[str, Any]:
    body: dict[str, Any] = {"type": type}
    if service is not None:
        body["service"] = service
    if name is not None:
        body["method"] = name
    return {"method": body}


def grpc_rule(
    *matches: Mapping[str, Any], backends: Sequence[Mapping[str, Any]], **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {"backendRefs": list(backends), **extra}
    if matches:
        body["matches"] = list(matches)
    return body


def grpc_route(
    name: str,
    *rules: Mapping[str, Any],
    ns: str = "default",
    parents: Sequence[Mapping[str, Any]] = ({"name": "gw"},),
    hostnames: Sequence[str] = (),
    created: str | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": ns}
    if created is not None:
        metadata["creationTimestamp"] = created
    spec: dict[str, Any] = {"parentRefs": list(parents), "rules": list(rules)}
    if hostnames:
        spec["hostnames"] = list(hostnames)
    return {"apiVersion": f"{GROUP}/v1", "kind": "GRPCRoute", "metadata": metadata, "spec": spec}


def reference_grant(ns: str, *, from_ns: str, to_name: str | None = None) -> dict[str, Any]:
    to: dict[str, Any] = {"group": "", "kind": "Service"}
    if to_name is not None:
        to["name"] = to_name
    return {
        "apiVersion": f"{GROUP}/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "grant", "namespace": ns},
        "spec": {"from": [{"group": GROUP, "kind": "GRPCRoute", "namespace": from_ns}], "to": [to]},
    }


BASE = (gateway_class(), gateway(), service("a"), service("b"))


def run(*bodies: Mapping[str, Any], settings: ListenerSettings = SETTINGS) -> ir.Translation:
    store = Store()
    store.replace_all([parse_object(body) for body in bodies], origin="test")
    return translate(store.view(), settings=settings)


def target(action: ir.RouteAction) -> str:
    if isinstance(action, ir.Forward):
        return action.backend
    if isinstance(action, ir.WeightedForward):
        return " ".join(f"{b.backend}={b.weight}" for b in action.backends)
    return f"{action.status} {action.body.strip()}"


def routing(translation: ir.Translation) -> dict[str, list[tuple[str, str, str]]]:
    """{host: [(path type, path, target)]} of the plain HTTP route config, in match order."""
    (http,) = [rc for rc in translation.config.route_configs if rc.name == "http"]
    return {
        vhost.name: [(r.path.type.value, r.path.value, target(r.action)) for r in vhost.routes]
        for vhost in http.virtual_hosts
    }


def routes(translation: ir.Translation, host: str = "*") -> list[ir.Route]:
    (http,) = [rc for rc in translation.config.route_configs if rc.name == "http"]
    (vhost,) = [v for v in http.virtual_hosts if v.name == host]
    return list(vhost.routes)


def conditions(
    translation: ir.Translation, name: str, *, kind: str = "GRPCRoute", ns: str = "default"
) -> set[tuple[str, str, str]]:
    return {
        (c.type, c.status.value, c.reason)
        for c in translation.conditions
        if (c.object.kind, c.object.namespace, c.object.name) == (kind, ns, name)
    }


def messages(translation: ir.Translation, name: str) -> str:
    return "\n".join(c.message for c in translation.conditions if c.object.name == name)


A = "default/a:50051/h2c"
B = "default/b:50051/h2c"
OK = {("Accepted", "True", "Accepted"), ("ResolvedRefs", "True", "ResolvedRefs")}


# --- matching -----------------------------------------------------------------


def test_method_matches_become_paths_and_the_route_is_accepted() -> None:
    translation = run(
        *BASE,
        grpc_route(
            "r",
            grpc_rule(method(GREETER, "SayHello"), backends=[backend_ref("b")]),
            grpc_rule(method(GREETER), backends=[backend_ref("a")]),
            grpc_rule(method(name="Check"), backends=[backend_ref("a")]),
            grpc_rule(
                method("pkg\\.v[0-9]+\\.Svc", type="RegularExpression"), backends=[backend_ref("a")]
            ),
            grpc_rule(backends=[backend_ref("a")]),
        ),
    )
    assert routing(translation) == {
        "*": [
            ("Exact", f"/{GREETER}/SayHello", B),
            ("StringPrefix", f"/{GREETER}/", A),
            ("RegularExpression", "/[^/]+/Check", A),
            ("RegularExpression", "/(?:pkg\\.v[0-9]+\\.Svc)/(?:[^/]+)", A),
            ("StringPrefix", "/", A),
        ]
    }
    assert conditions(translation, "r") == OK
    assert conditions(translation, "gw", kind="Gateway") == {("Accepted", "True", "Accepted")}
    # gRPC upstreams get HTTP/2 whatever the Service port says.
    assert {b.name: b.protocol for b in translation.config.backends} == {
        A: ir.UpstreamProtocol.H2C,
        B: ir.UpstreamProtocol.H2C,
    }


def test_header_matches_and_header_modifier_reach_the_route() -> None:
    modifier = {
        "type": "RequestHeaderModifier",
        "requestHeaderModifier": {
            "set": [{"name": "X-Env", "value": "prod"}],
            "add": [{"name": "x-tag", "value": "t"}],
            "remove": ["X-Debug"],
        },
    }
    match = {
        **method(GREETER, "SayHello"),
        "headers": [
            {"name": "X-Canary", "value": "yes"},
            {"name": "x-user", "value": "a.*", "type": "RegularExpression"},
        ],
    }
    translation = run(
        *BASE, grpc_route("r", grpc_rule(match, backends=[backend_ref("b")], filters=[modifier]))
    )
    (route,) = routes(translation)
    assert route.headers == (
        ir.HeaderMatch(name="x-canary", value="yes"),
        ir.HeaderMatch(name="x-user", value="a.*", regex=True),
    )
    assert route.request_headers == ir.HeaderMutation(
        set=(("x-env", "prod"),), add=(("x-tag", "t"),), remove=("x-debug",)
    )


# --- precedence ---------------------------------------------------------------


def test_precedence_exact_before_regex_longer_first_more_headers_first_then_age() -> None:
    header = {"headers": [{"name": "x-a", "value": "1"}]}
    translation = run(
        *BASE,
        grpc_route(
            "new",
            grpc_rule(method(GREETER, "SayHello"), backends=[backend_ref("b")]),
            created="2024-02-01T00:00:00Z",
        ),
        grpc_route(
            "old",
            grpc_rule(backends=[backend_ref("a")]),
            grpc_rule(method(".*", type="RegularExpression"), backends=[backend_ref("a")]),
            grpc_rule({**method(GREETER), **header}, backends=[backend_ref("a")]),
            grpc_rule(method(GREETER), backends=[backend_ref("b")]),
            grpc_rule(method(GREETER, "SayHello"), backends=[backend_ref("a")]),
            created="2024-01-01T00:00:00Z",
        ),
    )
    assert [(name, target) for _, name, target in routing(translation)["*"]] == [
        (f"/{GREETER}/SayHello", A),  # the older route wins the tie
        (f"/{GREETER}/SayHello", B),
        (f"/{GREETER}/", A),  # a header match is more specific
        (f"/{GREETER}/", B),
        ("/(?:.*)/(?:[^/]+)", A),
        ("/", A),
    ]


# --- weights ------------------------------------------------------------------


def test_weighted_backends_split_and_zero_weights_drop_out() -> None:
    translation = run(
        *BASE,
        service("c"),
        grpc_route(
            "r",
            grpc_rule(
                backends=[
                    backend_ref("a", weight=1),
                    backend_ref("b", weight=3),
                    backend_ref("c", weight=0),
                ]
            ),
        ),
    )
    (route,) = routes(translation)
    assert route.action == ir.WeightedForward(
        backends=(ir.WeightedBackend(backend=A, weight=1), ir.WeightedBackend(backend=B, weight=3))
    )
    assert "default/c:50051/h2c" not in {b.name for b in translation.config.backends}


def test_all_weights_zero_answers_unavailable() -> None:
    translation = run(*BASE, grpc_route("r", grpc_rule(backends=[backend_ref("a", weight=0)])))
    assert routing(translation)["*"] == [("StringPrefix", "/", "503 xds-ingress: BackendNotFound")]


# --- hostnames ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("listener_host", "route_hosts", "expected"),
    [
        (None, [], ["*"]),
        ("a.example.com", [], ["a.example.com"]),
        (None, ["a.example.com"], ["a.example.com"]),
        ("*.example.com", ["a.example.com", "other.org"], ["a.example.com"]),
        ("a.example.com", ["*.example.com"], ["a.example.com"]),
        ("*.example.com", ["*.a.example.com"], ["*.a.example.com"]),
        ("*.a.example.com", ["*.example.com"], ["*.a.example.com"]),
        ("*.example.com", ["example.com"], []),
        ("a.example.com", ["b.example.com"], []),
    ],
)
def test_hostname_intersection(
    listener_host: str | None, route_hosts: list[str], expected: list[str]
) -> None:
    assert intersect_hostnames(listener_host, route_hosts) == expected


def test_routes_take_the_intersection_of_hostnames_and_report_no_match() -> None:
    translation = run(
        gateway_class(),
        gateway("gw", listener(hostname="*.example.com")),
        service("a"),
        grpc_route(
            "r", grpc_rule(backends=[backend_ref("a")]), hostnames=["a.example.com", "x.org"]
        ),
        grpc_route("miss", grpc_rule(backends=[backend_ref("a")]), hostnames=["x.org"]),
    )
    assert set(routing(translation)) == {"a.example.com"}
    assert ("Accepted", "False", "NoMatchingListenerHostname") in conditions(translation, "miss")


# --- attachment ---------------------------------------------------------------


def test_attachment_follows_section_names_and_allowed_namespaces() -> None:
    translation = run(
        gateway_class(),
        gateway(
            "gw", listener("same"), listener("all", hostname="all.example.com", allowed_from="All")
        ),
        service("a", ns="other"),
        # From another namespace: only the All listener takes it.
        grpc_route(
            "r",
            grpc_rule(backends=[backend_ref("a")]),
            ns="other",
            parents=[{"name": "gw", "namespace": "default"}],
        ),
        grpc_route(
            "same",
            grpc_rule(backends=[backend_ref("a")]),
            ns="other",
            parents=[{"name": "gw", "namespace": "default", "sectionName": "same"}],
        ),
        grpc_route(
            "nosuch",
            grpc_rule(backends=[backend_ref("a")]),
            ns="other",
            parents=[{"name": "gw", "namespace": "default", "sectionName": "nope"}],
        ),
    )
    assert set(routing(translation)) == {"all.example.com"}
    assert conditions(translation, "r", ns="other") == OK
    assert ("Accepted", "False", "NotAllowedByListeners") in conditions(
        translation, "same", ns="other"
    )
    assert ("Accepted", "False", "NoMatchingParent") in conditions(
        translation, "nosuch", ns="other"
    )


def test_gateways_of_other_classes_and_their_routes_are_ignored() -> None:
    translation = run(
        gateway_class(),
        gateway_class("theirs", controller="example.com/other"),
        gateway("gw", class_name="theirs"),
        service("a"),
        grpc_route("r", grpc_rule(backends=[backend_ref("a")])),
    )
    assert routing(translation) == {}
    assert conditions(translation, "r") == set()
    assert conditions(translation, "gw", kind="Gateway") == set()


def test_claim_classless_takes_any_gateway_and_reports_missing_ones() -> None:
    settings = CLAIM_ALL
    translation = run(
        gateway("gw", class_name="whatever"),
        service("a"),
        grpc_route("r", grpc_rule(backends=[backend_ref("a")])),
        grpc_route("lost", grpc_rule(backends=[backend_ref("a")]), parents=[{"name": "missing"}]),
        settings=settings,
    )
    assert routing(translation)["*"] == [("StringPrefix", "/", A)]
    assert ("Accepted", "False", "NoMatchingParent") in conditions(translation, "lost")


def test_tls_passthrough_listeners_are_not_supported() -> None:
    translation = run(
        gateway_class(),
        gateway("gw", listener("tls", protocol="TLS")),
        service("a"),
        grpc_route("r", grpc_rule(backends=[backend_ref("a")])),
    )
    assert routing(translation) == {}
    assert ("Accepted", "False", "UnsupportedProtocol") in conditions(
        translation, "gw", kind="Gateway"
    )
    assert ("Accepted", "False", "NotAllowedByListeners") in conditions(translation, "r")
    assert "'TLS' is not supported" in messages(translation, "r")


def test_https_listeners_without_certificates_take_no_routes() -> None:
    translation = run(
        gateway_class(),
        gateway("gw", listener("https", protocol="HTTPS")),
        service("a"),
        grpc_route("r", grpc_rule(backends=[backend_ref("a")])),
    )
    assert routing(translation) == {}
    assert translation.config.https_listeners == ()
    assert ("Accepted", "False", "InvalidCertificateRef") in conditions(
        translation, "gw", kind="Gateway"
    )
    assert ("Accepted", "False", "NotAllowedByListeners") in conditions(translation, "r")


def test_httproutes_on_our_gateways_are_served() -> None:
    http_route = {**grpc_route("h", grpc_rule(backends=[backend_ref("a")])), "kind": "HTTPRoute"}
    translation = run(*BASE, http_route)
    assert routing(translation) == {"*": [("Prefix", "/", "default/a:50051")]}
    assert conditions(translation, "h", kind="HTTPRoute") == OK


# --- bad input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    ["(unclosed", "(a)\\1", "(?=a)b", "(?<!a)b", "(?>a)", "a++", "(?P<x>a)(?P=x)"],
)
def test_regexes_re2_cannot_run_are_refused(pattern: str) -> None:
    assert check_re2(pattern) is not None
    translation = run(
        *BASE,
        grpc_route(
            "r",
            grpc_rule(method(pattern, type="RegularExpression"), backends=[backend_ref("b")]),
            grpc_rule(backends=[backend_ref("a")]),
        ),
    )
    # Only the bad rule is dropped.
    assert routing(translation)["*"] == [("StringPrefix", "/", A)]
    assert ("Accepted", "False", "UnsupportedValue") in conditions(translation, "r")


@pytest.mark.parametrize("pattern", ["[(?=]x", "a\\(?=b", "(?i)abc", "(?P<n>a+)|b*?", "[^]]+"])
def test_regexes_re2_can_run_are_kept(pattern: str) -> None:
    assert check_re2(pattern) is None


def test_missing_backend_answers_unavailable_with_resolved_refs_false() -> None:
    translation = run(*BASE, grpc_route("r", grpc_rule(backends=[backend_ref("nope")])))
    assert routing(translation)["*"] == [("StringPrefix", "/", "503 xds-ingress: BackendNotFound")]
    assert conditions(translation, "r") == {
        ("Accepted", "True", "Accepted"),
        ("ResolvedRefs", "False", "BackendNotFound"),
    }


def test_invalid_hostnames_are_left_out_and_reported() -> None:
    translation = run(
        *BASE,
        grpc_route(
            "r", grpc_rule(backends=[backend_ref("a")]), hostnames=["ok.example.com", "Bad_Host"]
        ),
        grpc_route("bad", grpc_rule(backends=[backend_ref("a")]), hostnames=["10.0.0.1"]),
    )
    assert set(routing(translation)) == {"ok.example.com"}
    assert ("Accepted", "False", "UnsupportedValue") in conditions(translation, "r")
    assert ("Accepted", "False", "UnsupportedValue") in conditions(translation, "bad")


def test_backends_of_other_kinds_are_invalid_kind() -> None:
    translation = run(
        *BASE,
        grpc_route("r", grpc_rule(backends=[backend_ref("x", kind="Bucket", group="example.com")])),
    )
    assert ("ResolvedRefs", "False", "InvalidKind") in conditions(translation, "r")


def test_cross_namespace_backends_need_a_reference_grant() -> None:
    other = backend_ref("a", namespace="other")
    without = run(*BASE, service("a", ns="other"), grpc_route("r", grpc_rule(backends=[other])))
    assert routing(without)["*"] == [("StringPrefix", "/", "503 xds-ingress: RefNotPermitted")]
    assert ("ResolvedRefs", "False", "RefNotPermitted") in conditions(without, "r")

    granted = run(
        *BASE,
        service("a", ns="other"),
        reference_grant("other", from_ns="default"),
        grpc_route("r", grpc_rule(backends=[other])),
    )
    assert routing(granted)["*"] == [("StringPrefix", "/", "other/a:50051/h2c")]
    assert conditions(granted, "r") == OK

    # A grant for another Service, or from another namespace, does not count.
    for grant in (
        reference_grant("other", from_ns="default", to_name="b"),
        reference_grant("other", from_ns="elsewhere"),
    ):
        refused = run(
            *BASE, service("a", ns="other"), grant, grpc_route("r", grpc_rule(backends=[other]))
        )
        assert ("ResolvedRefs", "False", "RefNotPermitted") in conditions(refused, "r")


def _mangle(value: Any, rng: random.Random) -> Any:
    """`value` with some parts replaced by something of the wrong shape."""
    junk: list[Any] = [None, 7, True, "x", [], {}, [1, "y"], {"a": None}, "(?=", -1]
    if rng.random() < 0.15:
        return rng.choice(junk)
    if isinstance(value, dict):
        return {key: _mangle(item, rng) for key, item in value.items()}
    if isinstance(value, list):
        return [_mangle(item, rng) for item in value]
    return value


def test_garbage_never_raises() -> None:
    rng = random.Random(3)
    good = [
        gateway(
            "gw",
            listener(hostname="*.example.com", allowed_from="All"),
            listener("t", protocol="TLS"),
        ),
        grpc_route(
            "r",
            grpc_rule(
                {
                    **method(GREETER, "SayHello"),
                    "headers": [{"name": "x", "value": "y", "type": "RegularExpression"}],
                },
                backends=[backend_ref("a", weight=2), backend_ref("b", namespace="o")],
                filters=[
                    {
                        "type": "RequestHeaderModifier",
                        "requestHeaderModifier": {
                            "set": [{"name": "a", "value": "b"}],
                            "remove": ["c"],
                        },
                    }
                ],
            ),
            hostnames=["a.example.com"],
        ),
        reference_grant("o", from_ns="default"),
    ]
    for _ in range(300):
        mangled = [_mangle(body, rng) for body in good]
        objects = []
        for body in mangled:
            try:
                objects.append(parse_object(body))
            except ValueError:
                continue
        store = Store()
        store.replace_all(
            [parse_object(b) for b in (gateway_class(), service("a"), service("b", ns="o"))]
            + objects,
            origin="t",
        )
        for settings in (SETTINGS, CLAIM_ALL):
            translate(store.view(), settings=settings)
