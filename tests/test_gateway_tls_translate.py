"""Gateway HTTPS listeners in, IR out: certificates, filter chains, and which routes go where."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from test_grpcroute_translate import (
    CLAIM_ALL,
    GROUP,
    backend_ref,
    conditions,
    gateway,
    gateway_class,
    grpc_route,
    grpc_rule,
    listener,
    messages,
    run,
    service,
)
from test_tls_translate import chains, ingress, route_config, rule, tls
from tls_certs import CertificateAuthority, Issued, tls_secret

from xds_ingress import ir

A = "default/a:50051/h2c"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority()


@pytest.fixture(scope="module")
def wildcard(ca: CertificateAuthority) -> Issued:
    return ca.issue("*.example.com")


@pytest.fixture(scope="module")
def site(ca: CertificateAuthority) -> Issued:
    return ca.issue("site.test", "www.site.test")


def https(
    name: str = "https",
    *refs: Mapping[str, Any],
    hostname: str | None = None,
    secret: str = "cert",
    **tls_extra: Any,
) -> dict[str, Any]:
    body = listener(name, hostname=hostname, protocol="HTTPS")
    body["port"] = 443
    body["tls"] = {"certificateRefs": list(refs) or [{"name": secret}], **tls_extra}
    return body


def route(
    name: str, *, section: str | None = None, hostnames: tuple[str, ...] = ()
) -> dict[str, Any]:
    parent: dict[str, Any] = {"name": "gw"}
    if section is not None:
        parent["sectionName"] = section
    return grpc_route(
        name, grpc_rule(backends=[backend_ref("a")]), parents=[parent], hostnames=hostnames
    )


def hosts(translation: ir.Translation, name: str) -> dict[str, list[str]]:
    """{virtual host: [route names]} of one route config."""
    (found,) = [rc for rc in translation.config.route_configs if rc.name == name]
    return {v.name: [r.name for r in v.routes] for v in found.virtual_hosts}


def gateway_reasons(translation: ir.Translation) -> set[tuple[str, str, str]]:
    return conditions(translation, "gw", kind="Gateway")


def test_an_https_listener_serves_its_routes_over_tls_only(wildcard: Issued) -> None:
    translation = run(
        gateway_class(),
        gateway(
            "gw", listener("http", hostname="plain.example.com"), https(hostname="*.example.com")
        ),
        service("a"),
        tls_secret("cert", wildcard),
        route("secure", section="https", hostnames=("api.example.com",)),
        route("plain", section="http"),
    )
    assert chains(translation) == {"default/cert": ("*.example.com", "api.example.com")}
    secure = hosts(translation, "https/default/cert")
    assert secure["api.example.com"] == ["default/secure/spec.rules[0].matches[0]"]
    assert "plain.example.com" not in secure
    # The listener's own hostname has no routes: a 404, not another listener's routes.
    assert secure["certificate_names"] == []
    assert secure["misdirected_request"] == ["misdirected_request"]
    plain = hosts(translation, "http")
    assert plain == {"plain.example.com": ["default/plain/spec.rules[0].matches[0]"]}
    assert conditions(translation, "secure") == {
        ("Accepted", "True", "Accepted"),
        ("ResolvedRefs", "True", "ResolvedRefs"),
    }
    assert gateway_reasons(translation) == {("Accepted", "True", "Accepted")}
    assert [c.name for c in translation.config.certificates] == ["default/cert"]


def test_a_route_on_both_listeners_is_served_on_both(wildcard: Issued) -> None:
    translation = run(
        gateway_class(),
        gateway("gw", listener("http"), https(hostname="*.example.com")),
        service("a"),
        tls_secret("cert", wildcard),
        route("both", hostnames=("api.example.com",)),
    )
    assert list(hosts(translation, "http")) == ["api.example.com"]
    assert "api.example.com" in hosts(translation, "https/default/cert")


def test_without_a_hostname_the_listener_serves_its_certificate_names(site: Issued) -> None:
    translation = run(
        gateway_class(),
        gateway("gw", https()),
        service("a"),
        tls_secret("cert", site),
        route("any"),
        route("www", hostnames=("www.site.test",)),
        route("elsewhere", hostnames=("api.other.test",)),
    )
    assert chains(translation) == {"default/cert": ("site.test", "www.site.test")}
    served = hosts(translation, "https/default/cert")
    assert served["site.test"] == ["default/any/spec.rules[0].matches[0]"]
    assert sorted(served["www.site.test"]) == [
        "default/any/spec.rules[0].matches[0]",
        "default/www/spec.rules[0].matches[0]",
    ]
    assert hosts(translation, "http") == {}
    assert ("Accepted", "False", "NoMatchingListenerHostname") in conditions(
        translation, "elsewhere"
    )


@pytest.mark.parametrize(
    ("refs", "extra", "reason"),
    [
        ([{"name": "missing"}], (), "InvalidCertificateRef"),
        ([{"name": "cert", "kind": "ConfigMap", "group": ""}], (), "InvalidCertificateRef"),
        ([{"name": "cert", "namespace": "certs"}], (), "RefNotPermitted"),
        ([{"name": "opaque"}], (), "InvalidCertificateRef"),
    ],
)
def test_a_bad_certificate_ref_is_a_listener_condition_and_the_rest_flows(
    site: Issued, refs: list[dict[str, Any]], extra: tuple[Any, ...], reason: str
) -> None:
    translation = run(
        gateway_class(),
        gateway("gw", listener("http"), https("https", *refs)),
        service("a"),
        tls_secret("cert", site, namespace="certs"),
        tls_secret("opaque", site, secret_type="Opaque"),
        route("plain", section="http"),
        route("secure", section="https"),
    )
    assert translation.config.https_listeners == ()
    assert hosts(translation, "http") == {"*": ["default/plain/spec.rules[0].matches[0]"]}
    assert (("Accepted", "False", reason)) in gateway_reasons(translation)
    (finding,) = [c for c in translation.conditions if c.reason == reason]
    # The status writer reads the listener from this prefix.
    assert finding.message.startswith("spec.listeners[1] (https).tls.certificateRefs[0]")
    assert conditions(translation, "plain") == {
        ("Accepted", "True", "Accepted"),
        ("ResolvedRefs", "True", "ResolvedRefs"),
    }
    assert ("Accepted", "False", "NotAllowedByListeners") in conditions(translation, "secure")


def test_a_secret_in_another_namespace_with_a_reference_grant(site: Issued) -> None:
    grant = {
        "apiVersion": f"{GROUP}/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "gateways", "namespace": "certs"},
        "spec": {
            "from": [{"group": GROUP, "kind": "Gateway", "namespace": "default"}],
            "to": [{"group": "", "kind": "Secret", "name": "cert"}],
        },
    }
    translation = run(
        gateway_class(),
        gateway("gw", https("https", {"name": "cert", "namespace": "certs"})),
        service("a"),
        tls_secret("cert", site, namespace="certs"),
        grant,
        route("secure"),
    )
    assert chains(translation) == {"certs/cert": ("site.test", "www.site.test")}
    assert gateway_reasons(translation) == {("Accepted", "True", "Accepted")}


def test_only_the_first_servable_certificate_is_used(site: Issued, wildcard: Issued) -> None:
    translation = run(
        gateway_class(),
        gateway("gw", https("https", {"name": "missing"}, {"name": "site"}, {"name": "wild"})),
        service("a"),
        tls_secret("site", site),
        tls_secret("wild", wildcard),
        route("secure"),
    )
    assert list(chains(translation)) == ["default/site"]
    text = messages(translation, "gw")
    assert "certificateRefs[0]: Secret default/missing: not found" in text
    assert "certificateRefs[2]: only one certificate per listener" in text


def test_passthrough_is_not_served(site: Issued) -> None:
    translation = run(
        gateway_class(),
        gateway("gw", https(mode="Passthrough")),
        service("a"),
        tls_secret("cert", site),
        route("secure"),
    )
    assert translation.config.https_listeners == ()
    assert ("Accepted", "False", "UnsupportedValue") in gateway_reasons(translation)


def test_gateway_and_ingress_tls_share_the_machinery(wildcard: Issued, site: Issued) -> None:
    # The Gateway's wildcard certificate also covers the Ingress's host, so
    # both hosts share one chain (coalescing); the Ingress's own certificate
    # for site.test makes a second chain, and each answers 421 for the other.
    translation = run(
        gateway_class(),
        gateway("gw", https(hostname="*.example.com", secret="wild")),
        service("a"),
        service("svc"),
        tls_secret("wild", wildcard),
        tls_secret("site", site),
        route("secure", hostnames=("api.example.com",)),
        ingress("web", rule("shop.example.com"), rule("site.test"), tls_entries=[tls("site")]),
        settings=CLAIM_ALL,
    )
    found = chains(translation)
    assert found["default/wild"] == ("*.example.com", "api.example.com", "shop.example.com")
    assert found["default/site"] == ("site.test",)
    assert route_config(translation, "https/default/site")["misdirected_request"] == ("*",)
    # A Gateway route never reaches the plain listener, the Ingress's do.
    assert "api.example.com" not in hosts(translation, "http")
    assert "shop.example.com" in hosts(translation, "http")
