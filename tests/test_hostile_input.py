"""Hostile and broken input: each bad object is told why, and nothing else suffers.

The corpus below is objects a user (or an attacker with write access to one
namespace) can put in front of the ingress: invalid hosts, regular
expressions Envoy's RE2 refuses or that are too big for it, huge objects,
hosts claimed by two namespaces, ports out of range, bad certificates, names
longer than anyone expects and junk in every annotation. For each one:

- translate() reports a condition on that object, naming the field;
- the whole corpus together with a few good Ingresses translates, builds a
  consistent snapshot and passes `envoy --mode validate`;
- served by the control plane to a real Envoy, every resource is ACKed (no
  NACK at all) and every good route still reaches its backend.
"""

from __future__ import annotations

import dataclasses
import random
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from ingress_harness import Ingress, endpoint_slice, routes_to, say_hello
from ingress_harness import ingress as good_ingress
from ingress_harness import rule as good_rule
from ingress_harness import service as good_service
from peers import wait_until
from tls_certs import CertificateAuthority, tls_secret

from xds_ingress import ir
from xds_ingress.bootstrap import to_json
from xds_ingress.cache import DEFAULT_GROUP, build_snapshot, consistency_errors
from xds_ingress.demo.backend import GreeterBackend
from xds_ingress.resources import types
from xds_ingress.resources.builder import ResourceBuilder
from xds_ingress.resources.encoded import message_of
from xds_ingress.resources.static import render_static_bootstrap
from xds_ingress.sources.objects import parse_object
from xds_ingress.store import Store
from xds_ingress.translate import ListenerSettings, translate
from xds_ingress.translate.re2 import check_re2

ENVOY = Path(sys.executable).parent / "envoy"
# As the file source translates: every object in the folder is ours.
SETTINGS = ListenerSettings(
    listen_address="127.0.0.1", http_port=8080, https_port=8443, claim_classless=True
)
NS = "hostile"
GOOD_NS = "demo"  # the harness's namespace (ingress_harness.NAMESPACE)
GROUP = "gateway.networking.k8s.io"
TARGET = "target"  # the one Service (port "grpc", 50051) hostile objects route to
SAY_HELLO = "xds_ingress.demo.v1.Greeter"
# Older and newer creationTimestamps, for the cases where age decides.
OLDER = "2020-01-01T00:00:00Z"
NEWER = "2024-06-01T00:00:00Z"
Document = dict[str, Any]


# --- the objects ----------------------------------------------------------------


def meta(name: str, *, ns: str = NS, **extra: Any) -> Document:
    return {"name": name, "namespace": ns, **extra}


def ingress(
    name: str,
    *rules: Document,
    ns: str = NS,
    annotations: Mapping[str, str] | None = None,
    created: str | None = None,
    tls: Sequence[Document] | None = None,
    spec: Any = None,
) -> Document:
    metadata = meta(name, ns=ns)
    if annotations is not None:
        metadata["annotations"] = dict(annotations)
    if created is not None:
        metadata["creationTimestamp"] = created
    body: Document = {"rules": list(rules)} if spec is None else spec
    if tls is not None:
        body["tls"] = list(tls)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata,
        "spec": body,
    }


def rule(host: Any, *paths: Document) -> Document:
    entry: Document = {"http": {"paths": list(paths) or [path("/")]}}
    if host is not None:
        entry["host"] = host
    return entry


def path(value: Any = "/", *, type: Any = "Prefix", port: Any = None, svc: Any = TARGET) -> Any:
    port_ref = {"name": "grpc"} if port is None else port
    return {
        "path": value,
        "pathType": type,
        "backend": {"service": {"name": svc, "port": port_ref}},
    }


def service(name: str, *, ns: str = NS, annotations: Mapping[str, str] | None = None) -> Document:
    document = good_service(name)
    document["metadata"] = meta(name, ns=ns)
    if annotations is not None:
        document["metadata"]["annotations"] = dict(annotations)
    return document


def slice_for(service_name: str, port: int, *, ns: str = NS, addresses: Any = None) -> Document:
    document = endpoint_slice(service_name, port)
    document["metadata"]["namespace"] = ns
    if addresses is not None:
        document["endpoints"] = [{"addresses": addresses, "conditions": {"ready": True}}]
    return document


def gateway_class() -> Document:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "GatewayClass",
        "metadata": {"name": "xds"},
        "spec": {"controllerName": "xds-ingress.io/controller"},
    }


def gateway(name: str, *, ns: str = NS, listeners: Sequence[Document] | None = None) -> Document:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Gateway",
        "metadata": meta(name, ns=ns),
        "spec": {
            "gatewayClassName": "xds",
            "listeners": list(listeners or [{"name": "http", "port": 80, "protocol": "HTTP"}]),
        },
    }


def grpc_route(
    name: str,
    *rules: Document,
    ns: str = NS,
    hostnames: Sequence[Any] = (),
    parents: Sequence[Document] | None = None,
    kind: str = "GRPCRoute",
) -> Document:
    spec: Document = {"rules": list(rules)}
    if parents is None:
        spec["parentRefs"] = [{"name": "gw"}]
    elif parents:
        spec["parentRefs"] = list(parents)
    spec["hostnames"] = list(hostnames) or [f"{name}.hostile.test"]
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": kind,
        "metadata": meta(name, ns=ns),
        "spec": spec,
    }


def grpc_rule(*matches: Document, backends: Sequence[Document] | None = None, **extra: Any) -> Any:
    body: Document = {
        "backendRefs": list(
            backends if backends is not None else [{"name": TARGET, "port": 50051}]
        ),
        **extra,
    }
    if matches:
        body["matches"] = list(matches)
    return body


def method(service: Any = SAY_HELLO, name: Any = None, *, type: str = "Exact") -> Document:
    body: Document = {"type": type}
    if service is not None:
        body["service"] = service
    if name is not None:
        body["method"] = name
    return {"method": body}


def secret(name: str, cert: str, key: str) -> Document:
    return tls_secret(name, namespace=NS, cert_pem=cert, key_pem=key)


def tls_ingress(name: str, secret_name: str, host: str) -> Document:
    return ingress(name, rule(host), tls=[{"hosts": [host], "secretName": secret_name}])


# --- the corpus -----------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """Bad `documents`, and the condition translate must give `kind`/`name`.

    `says` must appear in the message: the field (or annotation) at fault.
    """

    id: str
    documents: tuple[Document, ...]
    kind: str
    name: str
    type: str
    reason: str
    says: str
    status: str = "False"
    namespace: str = NS


def _ingress_case(
    id: str, document: Document, reason: str, says: str, *, type: str = "Accepted"
) -> Case:
    return Case(
        id=id,
        documents=(document,),
        kind="Ingress",
        name=document["metadata"]["name"],
        type=type,
        reason=reason,
        says=says,
    )


def _annotation_case(id: str, annotation: str, value: str, *, says: str | None = None) -> Case:
    document = ingress(
        f"annotation-{id}", rule(f"annotation-{id}.hostile.test"), annotations={annotation: value}
    )
    return _ingress_case(
        f"annotation-{id}", document, "InvalidAnnotation", says or f"annotation {annotation}"
    )


def _route_case(
    id: str, document: Document, reason: str, says: str, *, type: str = "Accepted"
) -> Case:
    return Case(
        id=id,
        documents=(document,),
        kind=document["kind"],
        name=document["metadata"]["name"],
        type=type,
        reason=reason,
        says=says,
        # A case that expects Accepted expects it granted.
        status="True" if reason == "Accepted" else "False",
    )


def _pem_cases() -> list[Case]:
    ca = CertificateAuthority("hostile CA")
    one = ca.issue("mismatch.hostile.test")
    other = ca.issue("other.hostile.test")
    expired = ca.issue("expired.hostile.test", valid_days=(-30, -1))
    bad_pem = "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n"
    cases = [
        ("bad-pem", secret("bad-pem", bad_pem, one.key_pem), "InvalidCertificate"),
        ("key-mismatch", secret("key-mismatch", one.cert_pem, other.key_pem), "KeyMismatch"),
        (
            "bad-key",
            secret(
                "bad-key",
                one.cert_pem,
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            ),
            "InvalidKey",
        ),
    ]
    built = []
    for id, document, reason in cases:
        host = f"{id}.hostile.test"
        built.append(
            Case(
                id=f"tls-{id}",
                documents=(document, tls_ingress(f"tls-{id}", id, host)),
                kind="Ingress",
                name=f"tls-{id}",
                type="ResolvedRefs",
                reason=reason,
                says="spec.tls[0]",
            )
        )
    # Expired is served anyway (a client may not check), and said so.
    built.append(
        Case(
            id="tls-expired",
            documents=(
                secret("expired", expired.cert_pem, expired.key_pem),
                tls_ingress("tls-expired", "expired", "expired.hostile.test"),
            ),
            kind="Ingress",
            name="tls-expired",
            type="CertificateValid",
            reason="CertificateExpired",
            says="spec.tls[0]: Secret hostile/expired",
        )
    )
    not_base64 = secret("not-base64", "", "")
    not_base64["data"] = {"tls.crt": "%%%not base64%%%", "tls.key": "%%%"}
    built.append(
        Case(
            id="tls-not-base64",
            documents=(not_base64, tls_ingress("tls-not-base64", "not-base64", "nb.hostile.test")),
            kind="Ingress",
            name="tls-not-base64",
            type="ResolvedRefs",
            reason="InvalidSecret",
            says="is not base64",
        )
    )
    return built


def corpus() -> list[Case]:
    long_label = "a" * 64
    too_long = ".".join(["a" * 60] * 5)  # 304 characters
    cases = [
        # Hosts.
        *(
            _ingress_case(f"host-{id}", ingress(f"host-{id}", rule(host)), "InvalidHost", says)
            for id, host, says in (
                ("underscore", "bad_host.hostile.test", "spec.rules[0]"),
                ("long-label", f"{long_label}.hostile.test", "spec.rules[0]"),
                ("too-long", too_long, "spec.rules[0]"),
                ("inner-wildcard", "a.*.hostile.test", "spec.rules[0]"),
                ("double-wildcard", "*.*.hostile.test", "spec.rules[0]"),
                ("ipv4", "10.1.2.3", "IP address"),
                ("ipv6", "[::1]", "spec.rules[0]"),
                ("uppercase", "UPPER.hostile.test", "spec.rules[0]"),
                ("trailing-dot", "dot.hostile.test.", "spec.rules[0]"),
                ("empty-label", "a..hostile.test", "spec.rules[0]"),
                ("unicode", "bücher.hostile.test", "spec.rules[0]"),
                ("with-port", "port.hostile.test:8080", "spec.rules[0]"),
                ("space", "sp ace.hostile.test", "spec.rules[0]"),
                ("newline", "new\nline.hostile.test", "spec.rules[0]"),
                ("not-a-string", 42, "spec.rules[0].host"),
            )
        ),
        # Paths.
        *(
            _ingress_case(f"path-{id}", ingress(f"path-{id}", rule(None, entry)), reason, says)
            for id, entry, reason, says in (
                ("relative", path("api"), "InvalidPath", "spec.rules[0].http.paths[0]"),
                ("space", path("/a b"), "InvalidPath", "spec.rules[0].http.paths[0]"),
                ("query", path("/a?b=c"), "InvalidPath", "spec.rules[0].http.paths[0]"),
                ("nul", path("/a\x00b"), "InvalidPath", "spec.rules[0].http.paths[0]"),
                ("number", path(7), "InvalidPath", "spec.rules[0].http.paths[0]"),
                ("type", path("/x", type="Regex"), "InvalidPathType", "paths[0]"),
            )
        ),
        _ingress_case(
            "paths-not-a-list",
            ingress("paths-not-a-list", {"host": "pnl.hostile.test", "http": {"paths": "/"}}),
            "InvalidSpec",
            "spec.rules[0].http.paths",
        ),
        _ingress_case(
            "spec-not-a-mapping",
            ingress("spec-not-a-mapping", spec=["rules"]),
            "InvalidSpec",
            "spec",
        ),
        # Backend ports and references.
        *(
            _ingress_case(
                f"port-{id}",
                ingress(f"port-{id}", rule(f"port-{id}.hostile.test", path("/", port=port))),
                reason,
                "spec.rules[0].http.paths[0]",
                type="ResolvedRefs",
            )
            for id, port, reason in (
                ("zero", {"number": 0}, "InvalidBackend"),
                ("too-big", {"number": 65536}, "InvalidBackend"),
                ("negative", {"number": -1}, "InvalidBackend"),
                ("string-number", {"number": "80"}, "InvalidBackend"),
                ("unknown-name", {"name": "no such port"}, "PortNotFound"),
                ("neither", {}, "InvalidBackend"),
            )
        ),
        _ingress_case(
            "backend-missing",
            ingress("backend-missing", rule("bm.hostile.test", path("/", svc="nowhere"))),
            "BackendNotFound",
            "spec.rules[0].http.paths[0]",
            type="ResolvedRefs",
        ),
        _ingress_case(
            "backend-no-name",
            ingress("backend-no-name", rule("bnn.hostile.test", path("/", svc=None))),
            "InvalidBackend",
            "spec.rules[0].http.paths[0]",
            type="ResolvedRefs",
        ),
        # Conflicts: the older Ingress keeps what both ask for.
        Case(
            id="conflict-same-path",
            documents=(
                ingress("path-owner", rule("contested.hostile.test"), created=OLDER),
                ingress("path-thief", rule("contested.hostile.test"), created=NEWER),
            ),
            kind="Ingress",
            name="path-thief",
            type="Accepted",
            reason="PathConflict",
            says="spec.rules[0].http.paths[0]",
        ),
        _ingress_case(
            "conflict-within-one-ingress",
            ingress("dup-path", rule("dup.hostile.test", path("/x"), path("/x/"))),
            "PathConflict",
            "spec.rules[0].http.paths[1]: host dup.hostile.test Prefix path /x",
        ),
        # A host belongs to the namespace that claimed it first; the thief's
        # namespace sorts first, so only the timestamps can decide.
        Case(
            id="conflict-host-across-namespaces",
            documents=(
                ingress("host-owner", rule("owned.hostile.test", path("/")), created=OLDER),
                ingress(
                    "host-thief",
                    rule("owned.hostile.test", path("/admin")),
                    ns="aaa-thief",
                    created=NEWER,
                ),
            ),
            kind="Ingress",
            name="host-thief",
            namespace="aaa-thief",
            type="Accepted",
            reason="HostConflict",
            says="spec.rules[0].http.paths[0]: host owned.hostile.test belongs to namespace "
            "hostile",
        ),
        Case(
            id="conflict-tls-host",
            documents=(
                ingress(
                    "cert-owner",
                    rule("certs.hostile.test"),
                    created=OLDER,
                    tls=[{"hosts": ["certs.hostile.test"], "secretName": "good-cert"}],
                ),
                ingress(
                    "cert-thief",
                    rule("certs.hostile.test", path("/other")),
                    created=NEWER,
                    tls=[{"hosts": ["certs.hostile.test"], "secretName": "thief-cert"}],
                ),
            ),
            kind="Ingress",
            name="cert-thief",
            type="Accepted",
            reason="CertificateConflict",
            says="spec.tls[0]: host certs.hostile.test",
        ),
        # Annotations: every one of ours and ingress-nginx's, with junk.
        _annotation_case("grpc-timeout-max", "xds-ingress.io/grpc-timeout-max", "forever"),
        _annotation_case("stream-idle-timeout", "xds-ingress.io/stream-idle-timeout", "-5s"),
        _annotation_case("retry-on", "xds-ingress.io/retry-on", "sometimes,unavailable"),
        _annotation_case("retries", "xds-ingress.io/retries", "11"),
        _annotation_case("retries-negative", "xds-ingress.io/retries", "-1"),
        _annotation_case("load-balancer", "xds-ingress.io/load-balancer", "random-ish"),
        _annotation_case("hash-header", "xds-ingress.io/hash-header", "not a header"),
        _annotation_case("grpc-only", "xds-ingress.io/grpc-only", "maybe"),
        _annotation_case("client-cert", "xds-ingress.io/client-cert", "sometimes"),
        _annotation_case("backend-ca-secret", "xds-ingress.io/backend-ca-secret", "Not A Name"),
        _annotation_case("backend-sni", "xds-ingress.io/backend-sni", "bad sni!"),
        _annotation_case(
            "backend-protocol", "nginx.ingress.kubernetes.io/backend-protocol", "FCGI"
        ),
        _annotation_case(
            "proxy-read-timeout", "nginx.ingress.kubernetes.io/proxy-read-timeout", "ten"
        ),
        _annotation_case(
            "proxy-send-timeout", "nginx.ingress.kubernetes.io/proxy-send-timeout", "9" * 30
        ),
        _annotation_case("unknown", "xds-ingress.io/retires", "3"),
        Case(
            id="annotation-client-ca-secret",
            documents=(
                ingress(
                    "annotation-client-ca-secret",
                    rule("cca.hostile.test"),
                    annotations={"xds-ingress.io/client-ca-secret": "Not A Name"},
                    tls=[{"hosts": ["cca.hostile.test"], "secretName": "good-cert"}],
                ),
            ),
            kind="Ingress",
            name="annotation-client-ca-secret",
            type="ResolvedRefs",
            reason="SecretNotFound",
            says="annotation xds-ingress.io/client-ca-secret",
        ),
        _annotation_case("megabyte", "xds-ingress.io/retries", "7" * 1_000_000),
        _annotation_case(
            "megabyte-duration", "xds-ingress.io/grpc-timeout-max", "9" * 1_000_000 + "s"
        ),
        _annotation_case(
            "megabyte-seconds", "nginx.ingress.kubernetes.io/proxy-read-timeout", "9" * 100_000
        ),
        Case(
            id="annotation-health-check",
            documents=(
                service("health-junk", annotations={"xds-ingress.io/health-check": "http"}),
                ingress("uses-health-junk", rule("hj.hostile.test", path("/", svc="health-junk"))),
            ),
            kind="Service",
            name="health-junk",
            type="Accepted",
            reason="InvalidAnnotation",
            says="annotation xds-ingress.io/health-check",
        ),
        Case(
            id="annotation-health-check-service",
            documents=(
                service(
                    "health-service-junk",
                    annotations={
                        "xds-ingress.io/health-check": "grpc",
                        "xds-ingress.io/health-check-service": "not a service!",
                    },
                ),
                ingress(
                    "uses-health-service-junk",
                    rule("hsj.hostile.test", path("/", svc="health-service-junk")),
                ),
            ),
            kind="Service",
            name="health-service-junk",
            type="Accepted",
            reason="InvalidAnnotation",
            says="annotation xds-ingress.io/health-check-service",
        ),
        # Endpoints.
        Case(
            id="endpoint-bad-address",
            documents=(
                service("bad-endpoints"),
                {**slice_for("bad-endpoints", 1, addresses=["999.1.1.1", "::1", "not-an-ip"])},
                ingress(
                    "uses-bad-endpoints", rule("be.hostile.test", path("/", svc="bad-endpoints"))
                ),
            ),
            kind="EndpointSlice",
            name="bad-endpoints-slice",
            type="Accepted",
            reason="InvalidAddress",
            says="999.1.1.1",
        ),
        # TLS Secrets.
        *_pem_cases(),
        _ingress_case(
            "tls-bad-host",
            ingress(
                "tls-bad-host",
                rule("tbh.hostile.test"),
                tls=[{"hosts": ["bad_host!"], "secretName": "good-cert"}],
            ),
            "InvalidHost",
            "spec.tls[0].hosts[0]",
        ),
        _ingress_case(
            "tls-no-secret-name",
            ingress("tls-no-secret-name", rule("tns.hostile.test"), tls=[{"hosts": ["x.test"]}]),
            "InvalidTLS",
            "spec.tls[0]",
        ),
        # Regular expressions in GRPCRoute method and header matches.
        *(
            _route_case(
                f"regex-{id}",
                grpc_route(
                    f"regex-{id}",
                    grpc_rule(method(service, name, type="RegularExpression")),
                ),
                "UnsupportedValue",
                "spec.rules[0].matches[0].method",
            )
            for id, service, name in (
                ("lookahead", "(?=x)svc", None),
                ("lookbehind", None, "(?<!a)b"),
                ("backreference", "(a)\\1", None),
                ("possessive", None, "a++"),
                ("atomic", None, "(?>a)"),
                ("unclosed", "(abc", None),
                ("python-escape", None, "\\u0041"),
                ("python-flag", "(?x)a b", None),
                ("too-many-repeats", None, "a{1001}"),
                ("program-too-large", None, "[a-z]{200}"),
                ("program-just-too-large", "x{60}", "y{40}"),
                ("too-long", "a" * 2000, None),
            )
        ),
        _route_case(
            "regex-header",
            grpc_route(
                "regex-header",
                grpc_rule(
                    {"headers": [{"type": "RegularExpression", "name": "x-a", "value": "(?!x)"}]}
                ),
            ),
            "UnsupportedValue",
            "spec.rules[0].matches[0].headers[0].value",
        ),
        _route_case(
            "regex-catastrophic-ok",  # RE2 is linear: accepted, and Envoy takes it
            grpc_route(
                "regex-catastrophic-ok",
                grpc_rule(method("(a+)+", "(x|x)*y", type="RegularExpression")),
            ),
            "Accepted",
            "attached",
            type="Accepted",
        ),
        _route_case(
            "httproute-regex-path",
            grpc_route(
                "httproute-regex-path",
                {
                    "matches": [{"path": {"type": "RegularExpression", "value": "/(?=a)"}}],
                    "backendRefs": [{"name": TARGET, "port": 50051}],
                },
                kind="HTTPRoute",
            ),
            "UnsupportedValue",
            "spec.rules[0].matches[0].path.value",
        ),
        # GRPCRoute junk.
        *(
            _route_case(f"grpcroute-{id}", document, reason, says, type=type)
            for id, document, reason, says, type in (
                (
                    "method-name",
                    grpc_route("grpcroute-method-name", grpc_rule(method(SAY_HELLO, "Say Hello"))),
                    "UnsupportedValue",
                    "spec.rules[0].matches[0].method.method",
                    "Accepted",
                ),
                (
                    "service-name",
                    grpc_route("grpcroute-service-name", grpc_rule(method("1bad..svc"))),
                    "UnsupportedValue",
                    "spec.rules[0].matches[0].method.service",
                    "Accepted",
                ),
                (
                    "match-type",
                    grpc_route("grpcroute-match-type", grpc_rule(method(type="Prefix"))),
                    "UnsupportedValue",
                    "spec.rules[0].matches[0].method.type",
                    "Accepted",
                ),
                (
                    "negative-weight",
                    grpc_route(
                        "grpcroute-negative-weight",
                        grpc_rule(backends=[{"name": TARGET, "port": 50051, "weight": -5}]),
                    ),
                    "UnsupportedValue",
                    "spec.rules[0].backendRefs[0]: weight -5",
                    "Accepted",
                ),
                (
                    "string-weight",
                    grpc_route(
                        "grpcroute-string-weight",
                        grpc_rule(backends=[{"name": TARGET, "port": 50051, "weight": "ten"}]),
                    ),
                    "UnsupportedValue",
                    "spec.rules[0].backendRefs[0]: weight 'ten'",
                    "Accepted",
                ),
                (
                    "huge-weight",
                    grpc_route(
                        "grpcroute-huge-weight",
                        grpc_rule(backends=[{"name": TARGET, "port": 50051, "weight": 2**40}]),
                    ),
                    "UnsupportedValue",
                    "spec.rules[0].backendRefs[0]: weight",
                    "Accepted",
                ),
                (
                    "backend-port",
                    grpc_route(
                        "grpcroute-backend-port",
                        grpc_rule(backends=[{"name": TARGET, "port": 70000}]),
                    ),
                    "UnsupportedValue",
                    "spec.rules[0].backendRefs[0]",
                    "Accepted",
                ),
                (
                    "backend-kind",
                    grpc_route(
                        "grpcroute-backend-kind",
                        grpc_rule(backends=[{"name": TARGET, "port": 1, "kind": "Deployment"}]),
                    ),
                    "InvalidKind",
                    "spec.rules[0].backendRefs[0]",
                    "ResolvedRefs",
                ),
                (
                    "cross-namespace",
                    grpc_route(
                        "grpcroute-cross-namespace",
                        grpc_rule(backends=[{"name": "a", "namespace": GOOD_NS, "port": 50051}]),
                    ),
                    "RefNotPermitted",
                    "spec.rules[0].backendRefs[0]",
                    "ResolvedRefs",
                ),
                (
                    "filter",
                    grpc_route(
                        "grpcroute-filter",
                        grpc_rule(filters=[{"type": "RequestMirror"}]),
                    ),
                    "UnsupportedValue",
                    "spec.rules[0].filters[0]",
                    "Accepted",
                ),
                (
                    "set-host-header",
                    grpc_route(
                        "grpcroute-set-host-header",
                        grpc_rule(
                            filters=[
                                {
                                    "type": "RequestHeaderModifier",
                                    "requestHeaderModifier": {
                                        "set": [{"name": "Host", "value": "evil"}]
                                    },
                                }
                            ]
                        ),
                    ),
                    "UnsupportedValue",
                    "spec.rules[0].filters[0].requestHeaderModifier.set[0]",
                    "Accepted",
                ),
                (
                    "header-name",
                    grpc_route(
                        "grpcroute-header-name",
                        grpc_rule({"headers": [{"name": "bad header", "value": "x"}]}),
                    ),
                    "UnsupportedValue",
                    "spec.rules[0].matches[0].headers[0].name",
                    "Accepted",
                ),
                (
                    "bad-hostname",
                    grpc_route("grpcroute-bad-hostname", grpc_rule(), hostnames=["Bad_Host"]),
                    "UnsupportedValue",
                    "spec.hostnames[0]",
                    "Accepted",
                ),
                (
                    "missing-gateway",
                    grpc_route(
                        "grpcroute-missing-gateway", grpc_rule(), parents=[{"name": "nowhere"}]
                    ),
                    "NoMatchingParent",
                    "spec.parentRefs[0]",
                    "Accepted",
                ),
                (
                    "no-parent-refs",
                    grpc_route("grpcroute-no-parent-refs", grpc_rule(), parents=[]),
                    "NoMatchingParent",
                    "spec.parentRefs",
                    "Accepted",
                ),
            )
        ),
        # Gateway listeners.
        *(
            Case(
                id=f"gateway-{id}",
                documents=(gateway(f"gateway-{id}", listeners=[listener]),),
                kind="Gateway",
                name=f"gateway-{id}",
                type="Accepted",
                reason=reason,
                says="spec.listeners[0]",
            )
            for id, listener, reason in (
                ("port-zero", {"name": "l", "port": 0, "protocol": "HTTP"}, "UnsupportedValue"),
                (
                    "port-string",
                    {"name": "l", "port": "http", "protocol": "HTTP"},
                    "UnsupportedValue",
                ),
                ("udp", {"name": "l", "port": 80, "protocol": "UDP"}, "UnsupportedProtocol"),
                ("no-name", {"port": 80, "protocol": "HTTP"}, "Invalid"),
                (
                    "hostname",
                    {"name": "l", "port": 80, "protocol": "HTTP", "hostname": "Bad_Host"},
                    "InvalidHostname",
                ),
                (
                    "https-no-certificate",
                    {"name": "l", "port": 443, "protocol": "HTTPS", "tls": {"mode": "Terminate"}},
                    "InvalidCertificateRef",
                ),
            )
        ),
        # HTTPRoute junk.
        _route_case(
            "httproute-method",
            grpc_route(
                "httproute-method",
                {"matches": [{"method": "BREW"}], "backendRefs": [{"name": TARGET, "port": 50051}]},
                kind="HTTPRoute",
            ),
            "UnsupportedValue",
            "spec.rules[0].matches[0].method",
        ),
        _route_case(
            "httproute-negative-weight",
            grpc_route(
                "httproute-negative-weight",
                {"backendRefs": [{"name": TARGET, "port": 50051, "weight": -1}]},
                kind="HTTPRoute",
            ),
            "UnsupportedValue",
            "spec.rules[0].backendRefs[0]: weight -1",
        ),
        # Very large objects: served whole, and Envoy takes them.
        _route_case(
            "large-ingress",
            ingress(
                "large-ingress",
                *(rule(f"h{index}.large.hostile.test") for index in range(300)),
                rule("paths.large.hostile.test", *(path(f"/p/{i}") for i in range(3000))),
                annotations={"example.com/blob": "x" * 1_000_000},
            ),
            "Accepted",
            "served by xds-ingress",
            type="Accepted",
        ),
        # Names far longer than Kubernetes allows reach only the file source;
        # Envoy takes them as cluster, route and stat names.
        Case(
            id="long-names",
            documents=(
                service("s" * 253),
                slice_for("s" * 253, 1),
                ingress("i" * 253, rule("long.hostile.test", path("/", svc="s" * 253))),
            ),
            kind="Ingress",
            name="i" * 253,
            type="Accepted",
            reason="Accepted",
            says="served by xds-ingress",
            status="True",
        ),
        Case(
            id="odd-names",
            documents=(
                service("odd\nname\x00" + "ü" * 2000),
                slice_for("odd\nname\x00" + "ü" * 2000, 1),
                ingress(
                    "odd-names",
                    rule("odd.hostile.test", path("/", svc="odd\nname\x00" + "ü" * 2000)),
                ),
            ),
            kind="Ingress",
            name="odd-names",
            type="Accepted",
            reason="Accepted",
            says="served by xds-ingress",
            status="True",
        ),
    ]
    return cases


CORPUS = corpus()


def good_objects(ports: Mapping[str, int]) -> list[Document]:
    """Ingresses (and a GRPCRoute) that must keep working whatever else is loaded."""
    documents: list[Document] = []
    for name, port in ports.items():
        documents += [good_service(name), endpoint_slice(name, port)]
    documents += [
        good_ingress("good-a", [good_rule("a.good.test", ("/", "Prefix", "a"))]),
        good_ingress("good-b", [good_rule("b.good.test", ("/", "Prefix", "b"))]),
        good_ingress(
            "good-c",
            [good_rule("c.good.test", (f"/{SAY_HELLO}/SayHello", "Exact", "c"))],
        ),
        gateway("good-gw", ns=GOOD_NS),
        grpc_route(
            "good-route",
            grpc_rule(
                method(SAY_HELLO, "Say.*", type="RegularExpression"),
                backends=[{"name": "d", "port": 50051}],
            ),
            ns=GOOD_NS,
            hostnames=["d.good.test"],
            parents=[{"name": "good-gw"}],
        ),
    ]
    return documents


GOOD_HOSTS = {"a.good.test": "a", "b.good.test": "b", "c.good.test": "c", "d.good.test": "d"}


def shared_objects(port: int) -> list[Document]:
    """What the hostile objects lean on: their target Service, a Gateway, a good certificate."""
    ca = CertificateAuthority("shared CA")
    good = ca.issue("certs.hostile.test", "tbh.hostile.test")
    thief = ca.issue("certs.hostile.test")
    return [
        service(TARGET),
        slice_for(TARGET, port),
        gateway_class(),
        gateway("gw"),
        tls_secret("good-cert", good, namespace=NS),
        tls_secret("thief-cert", thief, namespace=NS),
    ]


def whole_corpus(port: int) -> list[Document]:
    return [*shared_objects(port), *(d for case in CORPUS for d in case.documents)]


# --- translate, one case at a time ----------------------------------------------


def run(documents: Sequence[Document]) -> ir.Translation:
    store = Store()
    store.replace_all([parse_object(document) for document in documents], origin="test")
    return translate(store.view(), settings=SETTINGS)


def test_the_corpus_is_large_and_every_case_has_its_own_objects() -> None:
    assert len(CORPUS) >= 50
    assert len({case.id for case in CORPUS}) == len(CORPUS)
    keys = [
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"])
        for case in CORPUS
        for d in case.documents
    ]
    assert len(keys) == len(set(keys)), "two cases share an object: they would mask each other"


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in CORPUS])
def test_each_bad_object_is_told_what_is_wrong_and_where(case: Case) -> None:
    translation = run([*shared_objects(9000), *case.documents])
    found = [
        c
        for c in translation.conditions
        if (c.object.kind, c.object.namespace, c.object.name)
        == (case.kind, case.namespace, case.name)
    ]
    matching = [
        c
        for c in found
        if (c.type, c.status.value, c.reason) == (case.type, case.status, case.reason)
    ]
    assert matching, f"no {case.type}={case.status} {case.reason} among {found}"
    assert any(case.says in c.message for c in matching), [c.message for c in matching]
    # A message is read by people and stored in status: never the 1 MB value.
    assert all(len(c.message) <= 2048 for c in translation.conditions)
    resources = ResourceBuilder().build(translation.config)
    assert consistency_errors(build_snapshot(resources)) == []


def test_the_good_routes_are_the_same_with_and_without_the_corpus() -> None:
    ports = {name: 9000 + index for index, name in enumerate("abcd")}
    alone = run(good_objects(ports))
    together = run([*good_objects(ports), *whole_corpus(9100)])

    def good_hosts(translation: ir.Translation) -> dict[str, ir.VirtualHost]:
        (plain,) = [rc for rc in translation.config.route_configs if rc.name == "http"]
        return {vh.name: vh for vh in plain.virtual_hosts if vh.name in GOOD_HOSTS}

    assert set(good_hosts(alone)) == set(GOOD_HOSTS)
    assert good_hosts(together) == good_hosts(alone)
    good = [c for c in together.conditions if c.object.namespace == GOOD_NS]
    assert all(c.status is ir.ConditionStatus.TRUE for c in good), good


# --- the whole corpus at once, judged by Envoy ---------------------------------


def envoy_validate(tmp_path: Path, resources: Mapping[str, Mapping[str, Any]]) -> None:
    bootstrap = render_static_bootstrap(
        resources, node_id="hostile", node_cluster="xds-ingress", admin_address=None
    )
    config = tmp_path / "static.json"
    config.write_text(to_json(bootstrap))
    result = subprocess.run(
        [str(ENVOY), "--mode", "validate", "-c", str(config), "--log-level", "warn"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]


def test_envoy_validates_the_whole_corpus_rendered_as_one_bootstrap(tmp_path: Path) -> None:
    translation = run([*good_objects({n: 9000 for n in "abcd"}), *whole_corpus(9100)])
    resources = ResourceBuilder().build(translation.config)
    assert consistency_errors(build_snapshot(resources)) == []
    # The judge looks: the large Ingress's 3300 routes are in there.
    (route_config,) = [message_of(r) for n, r in resources[types.ROUTE].items() if n == "http"]
    assert sum(len(vh.routes) for vh in route_config.virtual_hosts) > 3300
    envoy_validate(tmp_path, resources)


def test_envoy_validate_does_reject_a_regex_too_large_for_it(tmp_path: Path) -> None:
    """The judge above would catch a regex check that is too lenient."""
    translation = run(good_objects({n: 9000 for n in "abcd"}))
    resources = ResourceBuilder().build(_with_regex(translation.config, "[a-z]{200}"))
    with pytest.raises(AssertionError, match="program size"):
        envoy_validate(tmp_path, resources)


def _regexes(count: int, *, seed: int) -> list[str]:
    """Patterns of the constructs whose RE2 cost re2.py estimates, some near the limit."""
    atoms = ["a", "/", ".", "[^/]", "[a-z]", "[A-Za-z0-9_]", r"\d", r"\w", r"\s", r"\D"]
    atoms += ["é", "(?:x|yz)", "(a)", r"\.", "[^a-c]", "[é-ü]", r"\b", "^", "$"]
    quantifiers = ["", "", "*", "+", "?", "{2}", "{3,}", "{1,4}", "*?", "{0,3}", "{9}"]
    rng = random.Random(seed)
    patterns = []
    for _ in range(count):
        parts = [rng.choice(atoms) + rng.choice(quantifiers) for _ in range(rng.randint(1, 9))]
        patterns.append(("(?i)" if rng.random() < 0.1 else "") + "".join(parts))
    return patterns


def test_envoy_takes_every_regex_the_re2_check_lets_through(tmp_path: Path) -> None:
    """re2.py estimates RE2's program size from above; Envoy computes it and judges."""
    candidates = _regexes(400, seed=6)
    accepted = [pattern for pattern in candidates if check_re2(pattern) is None]
    # Both sides are exercised: many pass, and the limit refuses some.
    assert 100 < len(accepted) < len(candidates)
    translation = run(good_objects({n: 9000 for n in "abcd"}))
    envoy_validate(tmp_path, ResourceBuilder().build(_with_regex(translation.config, *accepted)))


def _with_regex(config: ir.Config, *regexes: str) -> ir.Config:
    (plain, *rest) = config.route_configs
    vhost = plain.virtual_hosts[0]
    template = vhost.routes[0]
    routes = tuple(
        dataclasses.replace(
            template,
            name=f"{template.name}/regex-{index}",
            path=ir.PathMatch(type=ir.PathMatchType.REGEX, value=regex),
        )
        for index, regex in enumerate(regexes)
    )
    vhost = dataclasses.replace(vhost, routes=(*routes, *vhost.routes))
    plain = dataclasses.replace(plain, virtual_hosts=(vhost, *plain.virtual_hosts[1:]))
    return dataclasses.replace(config, route_configs=(plain, *rest))


# --- served to a real Envoy -----------------------------------------------------


async def test_envoy_acks_everything_and_good_routes_keep_answering(
    ingress_under_test: Ingress, backends: dict[str, GreeterBackend]
) -> None:
    folder = ingress_under_test.config
    ports = {name: backend.port for name, backend in backends.items()}
    folder.write("good.yaml", *good_objects(ports))
    # Hostile objects route to a real backend too, so a hostile route that
    # Envoy took would be seen answering.
    folder.write("hostile.yaml", *whole_corpus(ports["a"]))
    await ingress_under_test.start()
    control_plane = ingress_under_test.control_plane
    assert control_plane is not None
    for host, backend in GOOD_HOSTS.items():
        await routes_to(ingress_under_test, host, backend)

    def acked_everything() -> bool:
        snapshot = control_plane.cache.current(DEFAULT_GROUP)
        return snapshot is not None and _acked(control_plane, snapshot)

    await wait_until(acked_everything, timeout=15, message="Envoy ACKs the snapshot")
    assert control_plane.xds.metrics.nack_count() == 0
    conditions = control_plane.pipeline.report.conditions
    for case in CORPUS:
        assert any(
            (c.object.kind, c.object.namespace, c.object.name, c.reason)
            == (case.kind, case.namespace, case.name, case.reason)
            for c in conditions
        ), case.id
    # A route whose backend was refused answers UNAVAILABLE (a 503), and
    # the good ones still answer.
    refused = await say_hello(ingress_under_test.target, authority="port-zero.hostile.test")
    assert refused.code is grpc.StatusCode.UNAVAILABLE
    for host, backend in GOOD_HOSTS.items():
        result = await say_hello(ingress_under_test.target, authority=host)
        assert result.backend == backend
    # "(a+)+" would take a backtracking engine exponential time on this
    # path; RE2 in Envoy is linear, so the call is answered at once.
    code, elapsed = await _call_path(
        ingress_under_test.target,
        authority="regex-catastrophic-ok.hostile.test",
        path="/" + "a" * 4000 + "!/" + "x" * 4000,
    )
    assert code is not grpc.StatusCode.DEADLINE_EXCEEDED and elapsed < 1.5, (code, elapsed)


async def _call_path(target: str, *, authority: str, path: str) -> tuple[grpc.StatusCode, float]:
    """A unary call to any method path; its status and how long it took."""
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.default_authority", authority)]
    ) as channel:
        call = channel.unary_unary(path, request_serializer=bytes, response_deserializer=bytes)
        started = time.monotonic()
        try:
            await call(b"", timeout=2.0)
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            code = error.code()
        return code, time.monotonic() - started


def _acked(control_plane: Any, snapshot: Any) -> bool:
    """Some stream has ACKed every resource of `snapshot` at its version, and NACKed none."""
    for stream in control_plane.xds.registry:
        wanted = {
            type_url: {name: r.version for name, r in typed.resources.items()}
            for type_url, typed in snapshot.types.items()
            if typed.resources
        }
        if all(
            stream.of_type(type_url).acked_resources == versions
            and not stream.of_type(type_url).nacked_resources
            for type_url, versions in wanted.items()
        ):
            return True
    return False
