"""Kubernetes objects in, IR out: which request goes where, and what each object is told."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from xds_ingress import ir
from xds_ingress.sources.file import FileSource
from xds_ingress.sources.objects import KubeObject, parse_object
from xds_ingress.store import Store
from xds_ingress.translate import ListenerSettings, translate, translator

EXAMPLES = Path(__file__).parent.parent / "examples"
SETTINGS = ListenerSettings(
    listen_address="127.0.0.1", http_port=8080, https_port=8443, claim_classless=True
)
GRPC_PORT = {"name": "grpc", "port": 50051, "appProtocol": "kubernetes.io/h2c"}


# --- objects as a user would write them --------------------------------------


def service(
    name: str, *, ns: str = "default", ports: Sequence[Mapping[str, Any]] = (GRPC_PORT,)
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": list(ports)},
    }


def endpoint_slice(
    name: str,
    *,
    service: str,
    ns: str = "default",
    endpoints: Sequence[Mapping[str, Any]] = (),
    ports: Sequence[Mapping[str, Any]] = ({"name": "grpc", "port": 9000},),
    address_type: str = "IPv4",
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": address_type,
        "ports": list(ports),
        "endpoints": list(endpoints),
    }


def ready(*addresses: str, is_ready: bool | None = True) -> dict[str, Any]:
    endpoint: dict[str, Any] = {"addresses": list(addresses)}
    if is_ready is not None:
        endpoint["conditions"] = {"ready": is_ready}
    return endpoint


def backend(service: str, port: int | str = "grpc") -> dict[str, Any]:
    key = "number" if isinstance(port, int) else "name"
    return {"service": {"name": service, "port": {key: port}}}


def path(
    value: Any, service: str, *, type: str = "Prefix", port: int | str = "grpc"
) -> dict[str, Any]:
    return {"path": value, "pathType": type, "backend": backend(service, port)}


def rule(host: str | None, *paths: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"http": {"paths": list(paths)}}
    if host is not None:
        entry["host"] = host
    return entry


def ingress(
    name: str,
    *rules: dict[str, Any],
    ns: str = "default",
    created: str | None = None,
    class_name: str | None = None,
    annotations: Mapping[str, str] | None = None,
    default_backend: dict[str, Any] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": ns}
    if created is not None:
        metadata["creationTimestamp"] = created
    if annotations is not None:
        metadata["annotations"] = dict(annotations)
    spec: dict[str, Any] = {"rules": list(rules)}
    if class_name is not None:
        spec["ingressClassName"] = class_name
    if default_backend is not None:
        spec["defaultBackend"] = default_backend
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata,
        "spec": spec,
    }


def ingress_class(
    name: str, *, controller: str = "xds-ingress.io/controller", default: bool = False
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if default:
        metadata["annotations"] = {"ingressclass.kubernetes.io/is-default-class": "true"}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": metadata,
        "spec": {"controller": controller},
    }


# --- reading the result -------------------------------------------------------


def run(*bodies: Mapping[str, Any], settings: ListenerSettings = SETTINGS) -> ir.Translation:
    store = Store()
    store.replace_all([parse_object(body) for body in bodies], origin="test")
    return translate(store.view(), settings=settings)


def routing(translation: ir.Translation) -> dict[str, list[tuple[str, str, str]]]:
    """{host: [(path type, path, backend name or "503 <reason>")]} in match order."""
    (route_config,) = translation.config.route_configs
    table = {}
    for vhost in route_config.virtual_hosts:
        assert vhost.domains == (vhost.name,)
        table[vhost.name] = [
            (route.path.type.value, route.path.value, _target(route.action))
            for route in vhost.routes
        ]
    return table


def _target(action: ir.RouteAction) -> str:
    if isinstance(action, ir.Forward):
        return action.backend
    if isinstance(action, ir.WeightedForward):
        return " ".join(f"{b.backend}={b.weight}" for b in action.backends)
    return f"{action.status} {action.body.strip()}"


def backends(translation: ir.Translation) -> dict[str, ir.Backend]:
    return {b.name: b for b in translation.config.backends}


def conditions(
    translation: ir.Translation, kind: str, name: str, ns: str = "default"
) -> set[tuple[str, str, str]]:
    return {
        (c.type, c.status.value, c.reason)
        for c in translation.conditions
        if (c.object.kind, c.object.namespace, c.object.name) == (kind, ns, name)
    }


def messages(translation: ir.Translation, name: str) -> list[str]:
    return [c.message for c in translation.conditions if c.object.name == name]


ACCEPTED = ("Accepted", "True", "Accepted")


# --- routing ------------------------------------------------------------------


def test_hosts_route_to_their_services_and_hostless_rules_go_to_the_catch_all() -> None:
    translation = run(
        service("a"),
        service("b"),
        endpoint_slice("a-1", service="a", endpoints=[ready("10.0.0.1")]),
        ingress(
            "web",
            rule("a.example.com", path("/", "a")),
            rule("*.example.com", path("/", "b")),
            rule(None, path("/api", "b")),
        ),
    )
    assert routing(translation) == {
        "*.example.com": [("Prefix", "/", "default/b:50051")],
        "a.example.com": [("Prefix", "/", "default/a:50051")],
        "*": [("Prefix", "/api", "default/b:50051")],
    }
    assert backends(translation)["default/a:50051"] == ir.Backend(
        name="default/a:50051",
        protocol=ir.UpstreamProtocol.H2C,
        endpoints=(ir.Endpoint(address="10.0.0.1", port=9000),),
        endpoint_source=ir.EndpointSource(namespace="default", service="a", port_name="grpc"),
    )
    assert conditions(translation, "Ingress", "web") == {ACCEPTED}


def test_one_http_listener_and_route_config_from_the_settings() -> None:
    settings = ListenerSettings(listen_address="::1", http_port=18080, https_port=18443)
    config = run(settings=settings).config
    assert config.listeners == (
        ir.Listener(name="http", address="::1", port=18080, route_config="http"),
    )
    assert config.route_configs == (ir.RouteConfig(name="http", virtual_hosts=()),)
    assert config.backends == ()


def test_rules_for_one_host_merge_across_ingresses() -> None:
    translation = run(
        service("a"),
        service("b"),
        ingress("one", rule("example.com", path("/a", "a"))),
        ingress("two", rule("example.com", path("/b", "b"))),
    )
    assert routing(translation) == {
        "example.com": [("Prefix", "/a", "default/a:50051"), ("Prefix", "/b", "default/b:50051")]
    }


def test_path_types_and_prefix_normalisation() -> None:
    translation = run(
        service("a"),
        ingress(
            "web",
            rule(
                None,
                path("/exact/", "a", type="Exact"),
                path("/prefix/", "a", type="Prefix"),
                path("/any", "a", type="ImplementationSpecific"),
                path("/", "a", type="Prefix"),
            ),
        ),
    )
    assert routing(translation)["*"] == [
        ("Exact", "/exact/", "default/a:50051"),
        ("Prefix", "/prefix", "default/a:50051"),
        ("StringPrefix", "/any", "default/a:50051"),
        ("Prefix", "/", "default/a:50051"),
    ]


def test_routes_match_exact_first_then_longest_path() -> None:
    paths = [
        path("/a", "s", type="Prefix"),
        path("/a/b/c", "s", type="Prefix"),
        path("/a", "s", type="Exact"),
        path("/zz", "s", type="Prefix"),
        path("/a/b", "s", type="ImplementationSpecific"),
        path("/a/b", "s", type="Prefix"),
        path("/", "s", type="Prefix"),
        path("/a/b/c/d", "s", type="Exact"),
    ]
    random.Random(7).shuffle(paths)
    translation = run(service("s"), ingress("web", rule("h.example.com", *paths)))
    assert [(t, p) for t, p, _ in routing(translation)["h.example.com"]] == [
        ("Exact", "/a/b/c/d"),
        ("Exact", "/a"),
        ("Prefix", "/a/b/c"),
        ("Prefix", "/a/b"),
        ("StringPrefix", "/a/b"),
        ("Prefix", "/zz"),
        ("Prefix", "/a"),
        ("Prefix", "/"),
    ]


def test_the_older_ingress_keeps_a_contested_path_and_the_newer_is_told() -> None:
    translation = run(
        service("old"),
        service("new"),
        ingress("newer", rule("h.example.com", path("/x", "new")), created="2024-05-01T00:00:00Z"),
        ingress("older", rule("h.example.com", path("/x", "old")), created="2024-01-01T00:00:00Z"),
    )
    assert routing(translation) == {"h.example.com": [("Prefix", "/x", "default/old:50051")]}
    assert conditions(translation, "Ingress", "older") == {ACCEPTED}
    assert conditions(translation, "Ingress", "newer") == {("Accepted", "False", "PathConflict")}
    assert "Ingress default/older" in messages(translation, "newer")[0]
    # The loser's Service is not referenced by any route, so it is not a backend.
    assert set(backends(translation)) == {"default/old:50051"}


def test_without_timestamps_namespace_then_name_decides_a_conflict() -> None:
    translation = run(
        service("s", ns="b"),
        service("s", ns="a"),
        ingress("z", rule("h.example.com", path("/x", "s")), ns="b"),
        ingress("z", rule("h.example.com", path("/x", "s")), ns="a"),
    )
    assert routing(translation) == {"h.example.com": [("Prefix", "/x", "a/s:50051")]}
    assert conditions(translation, "Ingress", "z", ns="b") == {
        ("Accepted", "False", "PathConflict")
    }


def test_same_path_with_different_types_is_no_conflict() -> None:
    translation = run(
        service("s"),
        ingress("one", rule(None, path("/x", "s", type="Exact"))),
        ingress("two", rule(None, path("/x", "s", type="Prefix"))),
    )
    assert len(routing(translation)["*"]) == 2
    assert conditions(translation, "Ingress", "two") == {ACCEPTED}


def test_default_backend_is_the_last_catch_all_route() -> None:
    translation = run(
        service("s"),
        service("fallback"),
        ingress("web", rule(None, path("/api", "s")), default_backend=backend("fallback")),
    )
    assert routing(translation)["*"] == [
        ("Prefix", "/api", "default/s:50051"),
        ("Prefix", "/", "default/fallback:50051"),
    ]
    assert conditions(translation, "Ingress", "web") == {ACCEPTED}


def test_default_backend_yields_to_a_rule_that_covers_slash() -> None:
    own = run(
        service("s"),
        service("fallback"),
        ingress("web", rule(None, path("/", "s")), default_backend=backend("fallback")),
    )
    assert routing(own)["*"] == [("Prefix", "/", "default/s:50051")]
    assert conditions(own, "Ingress", "web") == {ACCEPTED}

    other = run(
        service("s"),
        service("fallback"),
        ingress("rules", rule(None, path("/", "s", type="ImplementationSpecific"))),
        ingress("defaults", default_backend=backend("fallback"), created="2020-01-01T00:00:00Z"),
    )
    assert routing(other)["*"] == [("StringPrefix", "/", "default/s:50051")]
    assert conditions(other, "Ingress", "defaults") == {("Accepted", "False", "PathConflict")}


# --- backends -----------------------------------------------------------------


def test_missing_service_answers_503_and_names_the_service() -> None:
    translation = run(ingress("web", rule("h.example.com", path("/", "nope"))))
    assert routing(translation) == {
        "h.example.com": [("Prefix", "/", "503 xds-ingress: BackendNotFound")]
    }
    assert translation.config.backends == ()
    assert conditions(translation, "Ingress", "web") == {
        ACCEPTED,
        ("ResolvedRefs", "False", "BackendNotFound"),
    }
    assert any("Service default/nope not found" in m for m in messages(translation, "web"))


def test_missing_service_port_answers_503() -> None:
    translation = run(
        service("s"),
        ingress("web", rule(None, path("/a", "s", port="http"), path("/b", "s", port=80))),
    )
    assert [target for _, _, target in routing(translation)["*"]] == [
        "503 xds-ingress: PortNotFound",
        "503 xds-ingress: PortNotFound",
    ]
    assert ("ResolvedRefs", "False", "PortNotFound") in conditions(translation, "Ingress", "web")
    assert any("has no port 'http'" in m for m in messages(translation, "web"))


def test_port_by_name_or_number_is_one_backend_named_by_the_service_port() -> None:
    translation = run(
        service("s", ports=[{"name": "web", "port": 80}, GRPC_PORT]),
        ingress("web", rule(None, path("/a", "s", port="grpc"), path("/b", "s", port=50051))),
    )
    assert {target for _, _, target in routing(translation)["*"]} == {"default/s:50051"}
    assert list(backends(translation)) == ["default/s:50051"]


@pytest.mark.parametrize(
    ("port", "protocol"),
    [
        ({"name": "grpc", "port": 1}, ir.UpstreamProtocol.H2C),
        ({"name": "grpc-web", "port": 1}, ir.UpstreamProtocol.H2C),
        ({"name": "GRPC", "port": 1}, ir.UpstreamProtocol.H2C),
        ({"name": "api", "port": 1, "appProtocol": "kubernetes.io/h2c"}, ir.UpstreamProtocol.H2C),
        ({"name": "api", "port": 1, "appProtocol": "GRPC"}, ir.UpstreamProtocol.H2C),
        ({"name": "http", "port": 1}, ir.UpstreamProtocol.HTTP1),
        ({"port": 1}, ir.UpstreamProtocol.HTTP1),
        ({"name": "web", "port": 1, "appProtocol": "http"}, ir.UpstreamProtocol.HTTP1),
    ],
)
def test_upstream_protocol_follows_app_protocol_or_port_name(
    port: dict[str, Any], protocol: ir.UpstreamProtocol
) -> None:
    translation = run(
        service("s", ports=[port]), ingress("web", rule(None, path("/", "s", port=1)))
    )
    assert backends(translation)["default/s:1"].protocol is protocol


def test_endpoints_are_ready_addresses_on_the_matching_slice_port() -> None:
    translation = run(
        service("s"),
        endpoint_slice(
            "s-1",
            service="s",
            endpoints=[
                ready("10.0.0.2"),
                ready("10.0.0.1", is_ready=None),  # unknown counts as ready
                ready("10.0.0.9", is_ready=False),
                ready("10.0.0.2", "10.0.0.3"),
            ],
            ports=[{"name": "metrics", "port": 9100}, {"name": "grpc", "port": 9000}],
        ),
        endpoint_slice("s-2", service="s", endpoints=[ready("10.0.0.1")]),
        endpoint_slice("s-v6", service="s", address_type="IPv6", endpoints=[ready("fd00::0001")]),
        endpoint_slice(
            "s-fqdn", service="s", address_type="FQDN", endpoints=[ready("pod.example.com")]
        ),
        endpoint_slice(
            "s-other-port",
            service="s",
            ports=[{"name": "web", "port": 80}],
            endpoints=[ready("10.9.9.9")],
        ),
        endpoint_slice("elsewhere", service="s", ns="other", endpoints=[ready("10.8.8.8")]),
        endpoint_slice("t-1", service="t", endpoints=[ready("10.7.7.7")]),
        ingress("web", rule(None, path("/", "s"))),
    )
    assert backends(translation)["default/s:50051"].endpoints == (
        ir.Endpoint(address="10.0.0.1", port=9000),
        ir.Endpoint(address="10.0.0.2", port=9000),
        ir.Endpoint(address="10.0.0.3", port=9000),
        ir.Endpoint(address="fd00::1", port=9000),
    )


def test_single_unnamed_port_matches_the_unnamed_slice_port() -> None:
    translation = run(
        service("s", ports=[{"port": 80}]),
        endpoint_slice("s-1", service="s", ports=[{"port": 8080}], endpoints=[ready("10.0.0.1")]),
        ingress("web", rule(None, path("/", "s", port=80))),
    )
    assert backends(translation)["default/s:80"].endpoints == (
        ir.Endpoint(address="10.0.0.1", port=8080),
    )


def test_service_without_slices_is_a_backend_without_endpoints() -> None:
    translation = run(service("s"), ingress("web", rule(None, path("/", "s"))))
    assert backends(translation)["default/s:50051"].endpoints == ()
    assert conditions(translation, "Ingress", "web") == {ACCEPTED}


def test_bad_endpoint_addresses_are_skipped_and_reported_on_the_slice() -> None:
    translation = run(
        service("s"),
        endpoint_slice("s-1", service="s", endpoints=[ready("10.0.0.1", "not-an-ip", "fd00::1")]),
        ingress("web", rule(None, path("/", "s"))),
    )
    assert backends(translation)["default/s:50051"].endpoints == (
        ir.Endpoint(address="10.0.0.1", port=9000),
    )
    assert conditions(translation, "EndpointSlice", "s-1") == {
        ("Accepted", "False", "InvalidAddress")
    }


def test_only_referenced_backends_are_included() -> None:
    translation = run(
        service("used"), service("unused"), ingress("web", rule(None, path("/", "used")))
    )
    assert list(backends(translation)) == ["default/used:50051"]


# --- user mistakes ------------------------------------------------------------


def test_invalid_paths_and_hosts_skip_only_their_rule() -> None:
    translation = run(
        service("s"),
        ingress(
            "web",
            rule("ok.example.com", path("/good", "s"), path("relative", "s"), path("/q?x=1", "s")),
            rule("Bad_Host.example.com", path("/", "s")),
            rule("a.*.example.com", path("/", "s")),
            rule("10.0.0.1", path("/", "s")),
            rule(None, path("/x", "s", type="Regex")),
        ),
    )
    assert routing(translation) == {"ok.example.com": [("Prefix", "/good", "default/s:50051")]}
    assert conditions(translation, "Ingress", "web") == {
        ("Accepted", "False", "InvalidPath"),
        ("Accepted", "False", "InvalidHost"),
        ("Accepted", "False", "InvalidPathType"),
    }
    found = "\n".join(messages(translation, "web"))
    assert "spec.rules[0].http.paths[1]: path 'relative' must start with '/'" in found
    assert "spec.rules[1]: host 'Bad_Host.example.com' is not a valid DNS name" in found
    assert "spec.rules[3]: host '10.0.0.1' is an IP address" in found


def test_unsupported_backends_answer_503() -> None:
    resource = {"resource": {"apiGroup": "example.com", "kind": "Bucket", "name": "b"}}
    translation = run(
        ingress("web", rule(None, {"path": "/", "pathType": "Prefix", "backend": resource}))
    )
    assert routing(translation)["*"] == [("Prefix", "/", "503 xds-ingress: UnsupportedBackend")]
    assert ("ResolvedRefs", "False", "UnsupportedBackend") in conditions(
        translation, "Ingress", "web"
    )


# --- which Ingresses are ours -------------------------------------------------


def _served(*bodies: Mapping[str, Any], claim_classless: bool) -> set[str]:
    settings = ListenerSettings(
        listen_address="127.0.0.1", http_port=8080, https_port=8443, claim_classless=claim_classless
    )
    translation = run(service("s"), *bodies, settings=settings)
    return {
        route.origin.name
        for vh in translation.config.route_configs[0].virtual_hosts
        for route in vh.routes
    }


def _named(name: str, **kwargs: Any) -> dict[str, Any]:
    return ingress(name, rule(f"{name}.example.com", path("/", "s")), **kwargs)


def test_ingress_class_decides_which_ingresses_are_ours() -> None:
    objects = [
        ingress_class("ours"),
        ingress_class("theirs", controller="example.com/nginx"),
        _named("by-class", class_name="ours"),
        _named("other-class", class_name="theirs"),
        _named("unknown-class", class_name="missing"),
        _named("legacy", annotations={"kubernetes.io/ingress.class": "xds-ingress"}),
        _named("legacy-other", annotations={"kubernetes.io/ingress.class": "nginx"}),
        _named("classless"),
    ]
    assert _served(*objects, claim_classless=False) == {"by-class", "legacy"}
    assert _served(*objects, claim_classless=True) == {"by-class", "legacy", "classless"}


def test_a_default_ingress_class_of_ours_claims_classless_ingresses() -> None:
    assert _served(
        ingress_class("ours", default=True), _named("classless"), claim_classless=False
    ) == {"classless"}
    # Someone else's default class does not make classless Ingresses ours.
    other = ingress_class("nginx", controller="example.com/nginx", default=True)
    assert _served(other, _named("classless"), claim_classless=False) == set()


def test_ingresses_of_other_controllers_get_no_conditions() -> None:
    translation = run(
        ingress_class("theirs", controller="example.com/nginx"),
        _named("other", class_name="theirs"),
    )
    assert translation.conditions == ()


# --- robustness and determinism -----------------------------------------------

GARBAGE_SPECS: list[Any] = [
    None,
    "a string",
    [1, 2],
    {"rules": "not a list"},
    {"rules": [None, 3, "x", []]},
    {"rules": [{"host": 7, "http": {"paths": []}}]},
    {"rules": [{"host": "h.example.com", "http": "nope"}]},
    {"rules": [{"http": {"paths": None}}]},
    {"rules": [{"http": {"paths": [None, 1, {"path": 5}, {"path": "/", "pathType": ["Prefix"]}]}}]},
    {"rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": "svc"}]}}]},
    {
        "rules": [
            {"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": []}}]}}
        ]
    },
    {
        "rules": [
            {
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": {"x": 1}, "port": {"number": "80"}}},
                        }
                    ]
                }
            }
        ]
    },
    {
        "rules": [
            {
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "backend": {"service": {"name": "s", "port": {"number": True}}},
                        }
                    ]
                }
            }
        ]
    },
    {
        "rules": [
            {
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "backend": {"service": {"name": "s", "port": {"number": 70000}}},
                        }
                    ]
                }
            }
        ]
    },
    {
        "rules": [
            {"http": {"paths": [{"path": "/", "backend": {"service": {"name": "s", "port": []}}}]}}
        ]
    },
    {"defaultBackend": "x"},
    {"defaultBackend": {"service": {"name": "weird"}}},
    {"ingressClassName": {"a": 1}},
    {"ingressClassName": ["x"]},
    {"tls": "yes", "rules": {"a": 1}},
]


@pytest.mark.parametrize("spec", GARBAGE_SPECS)
def test_translate_never_raises_on_garbage(spec: Any) -> None:
    weird_service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "weird"},
        "spec": {"ports": [None, {"port": "x"}, {"name": 3, "port": 80, "appProtocol": 5}]},
    }
    weird_slice = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "w", "labels": {"kubernetes.io/service-name": "weird"}},
        "addressType": 4,
        "ports": [{"name": None, "port": 80}, "x"],
        "endpoints": [
            None,
            {"addresses": "10.0.0.1"},
            {"addresses": [1, None, "1.2.3.4"], "conditions": []},
        ],
    }
    bodies: list[Mapping[str, Any]] = [
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "g"},
            "spec": spec,
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "h", "annotations": ["x"], "creationTimestamp": 5},
            "spec": spec,
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "i", "creationTimestamp": "yesterday"},
            "spec": {"rules": [rule(None, path("/", "weird", port=80))]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": "c"},
            "spec": "x",
        },
        weird_service,
        weird_slice,
    ]
    # Straight into KubeObject too, skipping parse_object's checks, as a
    # future source might.
    raw = KubeObject(
        api_version="v1",
        kind="Ingress",
        namespace="default",
        name="raw",
        body={"spec": spec, "metadata": 3},
    )
    store = Store()
    store.replace_all([*(parse_object(b) for b in bodies), raw], origin="test")
    translation = translate(store.view(), settings=SETTINGS)
    assert all(c.reason != "InternalError" for c in translation.conditions)


@pytest.mark.parametrize("reader", ["ingress_options", "ingress_candidates", "tls_requests"])
def test_a_translator_bug_on_one_ingress_costs_that_ingress_only(
    monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    healthy = routing(run(*_world()))
    real = getattr(translator, reader)

    def broken(ingress: KubeObject, *, findings: Any) -> Any:
        if ingress.name == "two":
            raise RuntimeError("a translator bug")
        return real(ingress, findings=findings)

    monkeypatch.setattr(translator, reader, broken)
    translation = run(*_world())
    internal = [c for c in translation.conditions if c.reason == "InternalError"]
    assert [(c.object.name, c.type, c.status) for c in internal] == [
        ("two", "Accepted", ir.ConditionStatus.FALSE)
    ]
    assert internal[0].message.startswith("xds-ingress failed to ")
    # Ingress "one" keeps its routes on the host it shares with "two".
    assert routing(translation)["x.example.com"] == healthy["x.example.com"]


def _world() -> list[dict[str, Any]]:
    return [
        ingress_class("ours"),
        service("a"),
        service("b", ports=[{"name": "http", "port": 80}, GRPC_PORT]),
        endpoint_slice("a-1", service="a", endpoints=[ready("10.0.0.2"), ready("10.0.0.1")]),
        endpoint_slice("a-2", service="a", endpoints=[ready("10.0.0.3")]),
        endpoint_slice(
            "b-1",
            service="b",
            endpoints=[ready("10.1.0.1")],
            ports=[{"name": "http", "port": 8080}],
        ),
        ingress(
            "one",
            rule("x.example.com", path("/a", "a"), path("/b", "b", port=80)),
            created="2024-01-01T00:00:00Z",
        ),
        ingress(
            "two",
            rule("x.example.com", path("/a", "b", port="http")),
            rule(None, path("/", "a")),
            class_name="ours",
        ),
        ingress("three", rule("*.example.com", path("/", "missing")), rule("BAD", path("/", "a"))),
        ingress(
            "four", rule(None, path("/z", "a", type="Exact")), default_backend=backend("b", 80)
        ),
    ]


def test_output_does_not_depend_on_input_order() -> None:
    expected = run(*_world())
    for seed in range(5):
        shuffled = _world()
        random.Random(seed).shuffle(shuffled)
        assert run(*shuffled) == expected
    # Every tuple in the output is already sorted.
    assert list(expected.conditions) == sorted(expected.conditions)
    assert [b.name for b in expected.config.backends] == sorted(
        b.name for b in expected.config.backends
    )


def test_translate_does_not_change_the_store() -> None:
    store = Store()
    store.replace_all([parse_object(body) for body in _world()], origin="test")
    view = store.view()
    before = {
        obj.key: obj
        for kind in ("Ingress", "Service", "EndpointSlice")
        for obj in view.objects(kind)
    }
    translate(view, settings=SETTINGS)
    assert {
        obj.key: obj
        for kind in ("Ingress", "Service", "EndpointSlice")
        for obj in store.view().objects(kind)
    } == before


def test_the_example_configuration() -> None:
    source = FileSource(EXAMPLES)
    store = Store()
    store.replace_all(source.scan() or (), origin=source.origin)
    translation = translate(
        store.view(),
        settings=ListenerSettings(listen_address="127.0.0.1", http_port=8080, https_port=8443),
    )
    assert routing(translation) == {
        "a.greeter.local": [("Prefix", "/", "demo/greeter-a:50051")],
        "b.greeter.local": [("Prefix", "/", "demo/greeter-b:50051")],
        "*": [("Prefix", "/", "demo/greeter-a:50051")],
    }
    for b in translation.config.backends:
        assert b.protocol is ir.UpstreamProtocol.H2C
        assert [e.address for e in b.endpoints] == ["127.0.0.1"]
    assert conditions(translation, "Ingress", "demo", ns="demo") == {ACCEPTED}
