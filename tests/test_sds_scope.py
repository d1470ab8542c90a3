"""SDS carries only the Secrets Envoy's listeners and clusters use (issue 6).

A Secret's key goes to Envoy only when a listener serves its certificate:
not when it merely exists, nor when an Ingress of another class, or one
whose every host lost a conflict, names it.
"""

from __future__ import annotations

from typing import Any

from tls_certs import CertificateAuthority, tls_secret

from xds_ingress import ir
from xds_ingress.cache import build_snapshot, consistency_errors
from xds_ingress.resources import types
from xds_ingress.resources.builder import ResourceBuilder
from xds_ingress.sources.objects import parse_object
from xds_ingress.store import Store
from xds_ingress.translate import translate
from xds_ingress.translate.settings import ListenerSettings

SETTINGS = ListenerSettings(
    listen_address="127.0.0.1",
    http_port=8080,
    https_port=8443,
    min_tls_version=ir.TlsVersion.TLS1_2,
    claim_classless=False,
)


def tls_ingress(
    name: str, *, host: str, secret: str, class_name: str, created: str
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
        "spec": {
            "ingressClassName": class_name,
            "tls": [{"hosts": [host], "secretName": secret}],
            "rules": [
                {
                    "host": host,
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "web", "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ],
        },
    }


def ingress_class(name: str, controller: str) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {"name": name},
        "spec": {"controller": controller},
    }


def test_only_secrets_a_listener_serves_reach_sds() -> None:
    ca = CertificateAuthority()
    store = Store()
    documents = [
        ingress_class("ours", "xds-ingress.io/controller"),
        ingress_class("theirs", "example.com/other"),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ports": [{"port": 80}]},
        },
        tls_secret("served", ca.issue("a.example.com")),
        tls_secret("unreferenced", ca.issue("b.example.com")),
        tls_secret("other-class", ca.issue("c.example.com")),
        tls_secret("lost-conflict", ca.issue("a.example.com")),
        tls_ingress(
            "a",
            host="a.example.com",
            secret="served",
            class_name="ours",
            created="2026-01-01T00:00:00Z",
        ),
        tls_ingress(
            "c",
            host="c.example.com",
            secret="other-class",
            class_name="theirs",
            created="2026-01-01T00:00:00Z",
        ),
        # Newer, same host and path: loses, and its certificate with it.
        tls_ingress(
            "a-later",
            host="a.example.com",
            secret="lost-conflict",
            class_name="ours",
            created="2026-06-01T00:00:00Z",
        ),
    ]
    for document in documents:
        store.apply(parse_object(document), origin="test")
    translation = translate(store.view(), settings=SETTINGS)
    snapshot = build_snapshot(ResourceBuilder().build(translation.config))
    assert consistency_errors(snapshot) == []
    assert set(snapshot.of_type(types.SECRET).resources) == {"default/served"}
