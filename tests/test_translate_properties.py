"""Property tests of the translator over generated objects, plausible and junk.

Whatever the objects say, translate() returns conditions rather than
raising (and no condition says it caught an exception of its own), the
resource builder builds what it returns, the snapshot is consistent, and a
sample of the outputs passes `envoy --mode validate`.

The runs are bounded (max_examples, a deadline) and derandomised, so CI sees
the same examples every time and `make test` stays fast.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tls_certs import CertificateAuthority

from xds_ingress import ir
from xds_ingress.bootstrap import to_json
from xds_ingress.cache import build_snapshot, consistency_errors
from xds_ingress.resources.builder import ResourceBuilder
from xds_ingress.resources.static import render_static_bootstrap
from xds_ingress.sources.objects import KubeObject, ObjectError, parse_object
from xds_ingress.store import Store
from xds_ingress.translate import ListenerSettings, translate

ENVOY = Path(sys.executable).parent / "envoy"
SETTINGS = ListenerSettings(
    listen_address="127.0.0.1", http_port=8080, https_port=8443, claim_classless=True
)
GROUP = "gateway.networking.k8s.io"
Document = dict[str, Any]
Draw = Callable[[st.SearchStrategy[Any]], Any]

# Few names, so that generated objects refer to each other often.
NAMESPACES = ("a", "b")
NAMES = ("x", "y", "z")
SERVICE_NAMES = ("svc", "other", "missing")
SECRET_NAMES = ("cert", "junk-cert", "missing")

_CA = CertificateAuthority("property CA")
_ISSUED = _CA.issue("h.example.com", "*.example.com")
_OTHER = _CA.issue("other.example.com")
# (tls.crt, tls.key) pairs: good, mismatched, junk.
_PEM_PAIRS = (
    (_ISSUED.cert_pem, _ISSUED.key_pem),
    (_ISSUED.cert_pem, _OTHER.key_pem),
    ("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", _ISSUED.key_pem),
    ("", ""),
)

ANNOTATIONS = (
    "xds-ingress.io/grpc-timeout-max",
    "xds-ingress.io/stream-idle-timeout",
    "xds-ingress.io/retry-on",
    "xds-ingress.io/retries",
    "xds-ingress.io/load-balancer",
    "xds-ingress.io/hash-header",
    "xds-ingress.io/grpc-only",
    "xds-ingress.io/client-ca-secret",
    "xds-ingress.io/client-cert",
    "xds-ingress.io/backend-ca-secret",
    "xds-ingress.io/backend-sni",
    "xds-ingress.io/health-check",
    "xds-ingress.io/health-check-service",
    "xds-ingress.io/no-such-thing",
    "nginx.ingress.kubernetes.io/backend-protocol",
    "nginx.ingress.kubernetes.io/proxy-read-timeout",
    "nginx.ingress.kubernetes.io/proxy-send-timeout",
)
ANNOTATION_VALUES = (
    "0", "1", "3", "11", "-1", "30s", "1h30m", "500ms", "5x", "720h", "721h",
    "unavailable", "deadline-exceeded,CANCELLED", "grpc", "none", "GRPC", "GRPCS",
    "HTTP", "FCGI", "round-robin", "ring-hash", "least-request", "random", "x-user",
    "bad header", "true", "false", "required", "optional", "cert", "Not A Name",
    "svc.a.svc", "pkg.Service",
)  # fmt: skip

# --- values -----------------------------------------------------------------------

junk: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.lists(st.text(max_size=4), max_size=2),
    st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
)


def plausible(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly `strategy`, sometimes junk of any type."""
    return st.one_of(strategy, strategy, strategy, junk)


hosts = plausible(
    st.one_of(
        st.sampled_from(
            [
                "h.example.com",
                "*.example.com",
                "other.example.com",
                "a.b.example.com",
                "UPPER.example.com",
                "a.*.example.com",
                "10.0.0.1",
                "trailing.example.com.",
                "x" * 70 + ".example.com",
                "*",
                "",
            ]
        ),
        st.from_regex(r"[a-z0-9*._-]{1,20}", fullmatch=True),
    )
)
paths = plausible(
    st.one_of(
        st.sampled_from(["/", "/a", "/a/", "/a/b", "//", "/a?b", "/a b", "a", "/é", ""]),
        st.from_regex(r"/[a-zA-Z0-9/._~%-]{0,12}", fullmatch=True),
    )
)
path_types = plausible(st.sampled_from(["Exact", "Prefix", "ImplementationSpecific", "Regex"]))
ports = plausible(
    st.one_of(
        st.integers(min_value=-1, max_value=70000),
        st.sampled_from([50051, 80, 0, 65535, 65536]),
    )
)
port_names = plausible(st.sampled_from(["grpc", "http", "", "no such port"]))
regexes = plausible(
    st.one_of(
        st.sampled_from(
            [
                "Say.*",
                "(a+)+$",
                "(?=x)",
                "(a)\\1",
                "a{1001}",
                "[a-z]{200}",
                "x{60}",
                "\\u0041",
                "(",
                "[^/]+",
                "(?i)say",
                "a++",
            ]
        ),
        st.text(alphabet="ab.*+?()[]{}|^$\\/0123456789", max_size=15),
    )
)
grpc_names = plausible(
    st.one_of(
        st.sampled_from(["xds_ingress.demo.v1.Greeter", "SayHello", "1bad", "a b", ""]),
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_.]{0,15}", fullmatch=True),
    )
)
weights = plausible(st.one_of(st.integers(min_value=-5, max_value=2_000_000), st.just(1)))
timestamps = st.one_of(
    st.none(),
    st.sampled_from(["2020-01-01T00:00:00Z", "2024-06-01T00:00:00Z", "yesterday", ""]),
    junk,
)


def maybe_list(strategy: st.SearchStrategy[Any], *, max_size: int = 3) -> Any:
    return plausible(st.lists(strategy, max_size=max_size))


@st.composite
def metadata(draw: Draw, *, names: tuple[str, ...] = NAMES) -> Document:
    body: Document = {
        "name": draw(st.sampled_from(names)),
        "namespace": draw(st.sampled_from(NAMESPACES)),
    }
    created = draw(timestamps)
    if created is not None:
        body["creationTimestamp"] = created
    body["annotations"] = draw(
        plausible(
            st.dictionaries(
                st.sampled_from(ANNOTATIONS),
                st.one_of(st.sampled_from(ANNOTATION_VALUES), st.text(max_size=10)),
                max_size=4,
            )
        )
    )
    return body


# --- objects ----------------------------------------------------------------------


@st.composite
def backend(draw: Draw) -> Any:
    port = draw(
        st.one_of(
            st.fixed_dictionaries({"number": ports}),
            st.fixed_dictionaries({"name": port_names}),
            junk,
        )
    )
    return draw(
        plausible(
            st.just(
                {"service": {"name": draw(plausible(st.sampled_from(SERVICE_NAMES))), "port": port}}
            )
        )
    )


@st.composite
def ingress_path(draw: Draw) -> Any:
    return draw(
        plausible(
            st.fixed_dictionaries(
                {"path": paths, "pathType": path_types, "backend": backend()},
            )
        )
    )


@st.composite
def ingress_rule(draw: Draw) -> Any:
    body: Document = {
        "http": draw(plausible(st.fixed_dictionaries({"paths": maybe_list(ingress_path())})))
    }
    host = draw(st.one_of(st.none(), hosts))
    if host is not None:
        body["host"] = host
    return draw(plausible(st.just(body)))


@st.composite
def ingress(draw: Draw) -> Document:
    spec: Document = {"rules": draw(maybe_list(ingress_rule(), max_size=4))}
    if draw(st.booleans()):
        spec["defaultBackend"] = draw(backend())
    if draw(st.booleans()):
        spec["tls"] = draw(
            maybe_list(
                plausible(
                    st.fixed_dictionaries(
                        {
                            "hosts": maybe_list(hosts),
                            "secretName": plausible(st.sampled_from(SECRET_NAMES)),
                        }
                    )
                )
            )
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": draw(metadata()),
        "spec": draw(plausible(st.just(spec))),
    }


@st.composite
def service(draw: Draw) -> Document:
    port = st.fixed_dictionaries(
        {
            "name": port_names,
            "port": ports,
            "appProtocol": plausible(st.sampled_from(["kubernetes.io/h2c", "grpc", "http", ""])),
        }
    )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": draw(metadata(names=SERVICE_NAMES)),
        "spec": draw(plausible(st.fixed_dictionaries({"ports": maybe_list(plausible(port))}))),
    }


@st.composite
def endpoint_slice(draw: Draw) -> Document:
    addresses = plausible(
        st.sampled_from(["127.0.0.1", "10.0.0.2", "::1", "999.1.1.1", "host.example", ""])
    )
    endpoint = st.fixed_dictionaries(
        {
            "addresses": maybe_list(addresses),
            "conditions": plausible(
                st.fixed_dictionaries(
                    {
                        "ready": plausible(st.booleans()),
                        "serving": plausible(st.booleans()),
                        "terminating": plausible(st.booleans()),
                    }
                )
            ),
        }
    )
    meta = draw(metadata())
    meta["labels"] = draw(
        plausible(
            st.fixed_dictionaries(
                {"kubernetes.io/service-name": plausible(st.sampled_from(SERVICE_NAMES))}
            )
        )
    )
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": meta,
        "addressType": draw(plausible(st.sampled_from(["IPv4", "IPv6", "FQDN"]))),
        "ports": draw(
            maybe_list(plausible(st.fixed_dictionaries({"name": port_names, "port": ports})))
        ),
        "endpoints": draw(maybe_list(plausible(endpoint))),
    }


@st.composite
def secret(draw: Draw) -> Document:
    cert, key = draw(st.sampled_from(_PEM_PAIRS))
    data = {
        "tls.crt": base64.b64encode(cert.encode()).decode(),
        "tls.key": base64.b64encode(key.encode()).decode(),
    }
    if draw(st.booleans()):
        data["ca.crt"] = draw(st.sampled_from([base64.b64encode(_CA.pem).decode(), "%%%", ""]))
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": draw(metadata(names=SECRET_NAMES)),
        "type": draw(plausible(st.sampled_from(["kubernetes.io/tls", "Opaque"]))),
        "data": draw(plausible(st.just(data))),
    }


@st.composite
def gateway(draw: Draw) -> Document:
    listener = st.fixed_dictionaries(
        {
            "name": plausible(st.sampled_from(["http", "https", ""])),
            "port": ports,
            "protocol": plausible(st.sampled_from(["HTTP", "HTTPS", "TCP", "UDP"])),
        },
        optional={
            "hostname": hosts,
            "tls": plausible(
                st.fixed_dictionaries(
                    {
                        "mode": plausible(st.sampled_from(["Terminate", "Passthrough"])),
                        "certificateRefs": maybe_list(
                            plausible(
                                st.fixed_dictionaries(
                                    {"name": plausible(st.sampled_from(SECRET_NAMES))}
                                )
                            )
                        ),
                    }
                )
            ),
            "allowedRoutes": plausible(
                st.fixed_dictionaries(
                    {
                        "namespaces": plausible(
                            st.fixed_dictionaries(
                                {"from": plausible(st.sampled_from(["Same", "All", "Selector"]))}
                            )
                        )
                    }
                )
            ),
        },
    )
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Gateway",
        "metadata": draw(metadata(names=("gw", "other-gw"))),
        "spec": draw(
            plausible(
                st.fixed_dictionaries(
                    {
                        "gatewayClassName": plausible(st.sampled_from(["xds", "someone-else"])),
                        "listeners": maybe_list(plausible(listener)),
                    }
                )
            )
        ),
    }


@st.composite
def route_backend(draw: Draw) -> Any:
    return draw(
        plausible(
            st.fixed_dictionaries(
                {"name": plausible(st.sampled_from(SERVICE_NAMES)), "port": ports},
                optional={
                    "weight": weights,
                    "namespace": plausible(st.sampled_from(NAMESPACES)),
                    "kind": plausible(st.sampled_from(["Service", "Deployment"])),
                },
            )
        )
    )


header_matches = maybe_list(
    plausible(
        st.fixed_dictionaries(
            {
                "name": plausible(st.sampled_from(["x-user", "bad header", "Host", ""])),
                "value": plausible(st.one_of(st.sampled_from(["a", ""]), regexes)),
            },
            optional={"type": plausible(st.sampled_from(["Exact", "RegularExpression"]))},
        )
    )
)
filters = maybe_list(
    plausible(
        st.fixed_dictionaries(
            {
                "type": plausible(st.sampled_from(["RequestHeaderModifier", "RequestMirror"])),
                "requestHeaderModifier": plausible(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "set": maybe_list(
                                plausible(
                                    st.fixed_dictionaries(
                                        {
                                            "name": plausible(st.sampled_from(["x-a", "Host"])),
                                            "value": plausible(st.just("v")),
                                        }
                                    )
                                )
                            ),
                            "remove": maybe_list(plausible(st.sampled_from(["x-b", "host"]))),
                        },
                    )
                ),
            }
        )
    ),
    max_size=2,
)


@st.composite
def route(draw: Draw, *, kind: str) -> Document:
    if kind == "GRPCRoute":
        match = st.fixed_dictionaries(
            {},
            optional={
                "method": plausible(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "type": plausible(st.sampled_from(["Exact", "RegularExpression"])),
                            "service": st.one_of(grpc_names, regexes),
                            "method": st.one_of(grpc_names, regexes),
                        },
                    )
                ),
                "headers": header_matches,
            },
        )
    else:
        match = st.fixed_dictionaries(
            {},
            optional={
                "path": plausible(
                    st.fixed_dictionaries(
                        {
                            "type": plausible(
                                st.sampled_from(["Exact", "PathPrefix", "RegularExpression"])
                            ),
                            "value": st.one_of(paths, regexes),
                        }
                    )
                ),
                "method": plausible(st.sampled_from(["GET", "POST", "BREW"])),
                "headers": header_matches,
            },
        )
    rule = st.fixed_dictionaries(
        {
            "matches": maybe_list(plausible(match)),
            "backendRefs": maybe_list(route_backend()),
        },
        optional={"filters": filters},
    )
    parent = st.fixed_dictionaries(
        {"name": plausible(st.sampled_from(["gw", "other-gw", "missing"]))},
        optional={"namespace": plausible(st.sampled_from(NAMESPACES))},
    )
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": kind,
        "metadata": draw(metadata()),
        "spec": draw(
            plausible(
                st.fixed_dictionaries(
                    {"parentRefs": maybe_list(plausible(parent)), "rules": maybe_list(rule)},
                    optional={"hostnames": maybe_list(hosts)},
                )
            )
        ),
    }


FIXED = [
    {
        "apiVersion": f"{GROUP}/v1",
        "kind": "GatewayClass",
        "metadata": {"name": "xds"},
        "spec": {"controllerName": "xds-ingress.io/controller"},
    }
]


@st.composite
def coherent(draw: Draw) -> list[Document]:
    """Objects that fit together (a routed Service with endpoints, a Gateway), with
    a few generated fields, so that many examples reach Envoy's routes and clusters."""
    ns = draw(st.sampled_from(NAMESPACES))
    port_name = draw(st.sampled_from(["grpc", "grpc", "http", ""]))
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "svc", "namespace": ns},
        "spec": {"ports": [{"name": port_name, "port": 50051}]},
    }
    slice_ = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "svc-1",
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": "svc"},
        },
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": draw(st.integers(1, 65535))}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
    }
    routed = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {
            "name": "routed",
            "namespace": ns,
            "annotations": draw(
                st.dictionaries(
                    st.sampled_from(ANNOTATIONS), st.sampled_from(ANNOTATION_VALUES), max_size=3
                )
            ),
        },
        "spec": {
            "rules": [
                {
                    "host": draw(hosts),
                    "http": {
                        "paths": [
                            {
                                "path": draw(paths),
                                "pathType": draw(path_types),
                                "backend": {
                                    "service": {"name": "svc", "port": {"name": port_name}}
                                },
                            }
                        ]
                    },
                }
            ]
        },
    }
    gw = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Gateway",
        "metadata": {"name": "gw", "namespace": ns},
        "spec": {
            "gatewayClassName": "xds",
            "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
        },
    }
    return [service, slice_, routed, gw]


# Any one object of the kinds translation reads, generated without regard to the others.
any_object = st.one_of(
    ingress(),
    service(),
    endpoint_slice(),
    secret(),
    gateway(),
    route(kind="GRPCRoute"),
    route(kind="HTTPRoute"),
)
documents = st.tuples(
    st.one_of(st.just([]), coherent()),
    st.lists(
        any_object,
        min_size=1,
        max_size=8,
    ),
).map(lambda parts: [*parts[1], *parts[0]])


# --- the properties ---------------------------------------------------------------


def translate_documents(bodies: list[Document]) -> ir.Translation:
    objects: dict[tuple[str, str, str], KubeObject] = {}
    for body in [*FIXED, *bodies]:
        try:
            obj = parse_object(body)
        except ObjectError:
            continue  # what every source does with it: a log line
        objects[obj.key] = obj  # the last write of a name wins, as in a folder
    store = Store()
    store.replace_all(list(objects.values()), origin="property")
    return translate(store.view(), settings=SETTINGS)


def check(translation: ir.Translation) -> dict[str, Any]:
    internal = [c for c in translation.conditions if c.reason == "InternalError"]
    assert internal == [], "translate caught an exception of its own"
    resources = ResourceBuilder().build(translation.config)
    assert consistency_errors(build_snapshot(resources)) == []
    return render_static_bootstrap(
        resources, node_id="property", node_cluster="xds-ingress", admin_address=None
    )


BOUNDED = settings(
    max_examples=100,
    # Generous: six test runs may share two cores; a real slowdown is far above it.
    deadline=5000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@BOUNDED
@given(documents)
def test_translate_never_raises_and_its_output_always_builds(bodies: list[Document]) -> None:
    check(translate_documents(bodies))


@settings(
    max_examples=20,
    deadline=20_000,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(documents)
def test_a_sample_of_outputs_passes_envoy_validate(tmp_path: Path, bodies: list[Document]) -> None:
    bootstrap = check(translate_documents(bodies))
    config = tmp_path / "static.json"
    config.write_text(to_json(bootstrap))
    result = subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(config), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]


def test_the_generators_reach_routes_envoy_is_sent() -> None:
    """Not vacuous: some generated objects become routes and clusters."""

    @settings(max_examples=30, derandomize=True, database=None, deadline=None)
    @given(documents)
    def collect(bodies: list[Document]) -> None:
        config = translate_documents(bodies).config
        seen["routes"] += sum(
            len(vh.routes) for rc in config.route_configs for vh in rc.virtual_hosts
        )
        seen["backends"] += len(config.backends)

    seen = {"routes": 0, "backends": 0}
    collect()
    assert seen["routes"] > 0 and seen["backends"] > 0, seen
