"""Ingress spec.tls and TLS Secrets in, certificates and filter chains out.

Which chain (certificate) each host lands on, what each certificate's route
config answers, and what each Ingress is told when a Secret cannot be served.
"""

from __future__ import annotations

import base64
import dataclasses
import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from tls_certs import CertificateAuthority, Issued, tls_secret

from xds_ingress import ir
from xds_ingress.sources.objects import parse_object
from xds_ingress.store import Store
from xds_ingress.translate import CertificateCache, ListenerSettings, translate
from xds_ingress.translate import certificates as certificates_module
from xds_ingress.translate.hostnames import covers

SETTINGS = ListenerSettings(
    listen_address="127.0.0.1", http_port=8080, https_port=8443, claim_classless=True
)
GRPC_PORT = {"name": "grpc", "port": 50051, "appProtocol": "kubernetes.io/h2c"}


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority()


@pytest.fixture(scope="module")
def wildcard(ca: CertificateAuthority) -> Issued:
    return ca.issue("*.example.com")


@pytest.fixture(scope="module")
def other(ca: CertificateAuthority) -> Issued:
    return ca.issue("other.test")


# --- objects as a user would write them --------------------------------------


def service(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"ports": [GRPC_PORT]},
    }


def rule(host: str | None, target: str = "svc") -> dict[str, Any]:
    entry: dict[str, Any] = {
        "http": {
            "paths": [
                {
                    "path": "/",
                    "pathType": "Prefix",
                    "backend": {"service": {"name": target, "port": {"name": "grpc"}}},
                }
            ]
        }
    }
    if host is not None:
        entry["host"] = host
    return entry


def tls(secret: str, *hosts: str) -> dict[str, Any]:
    """A spec.tls entry; no hosts: the entry has no hosts field."""
    entry: dict[str, Any] = {"secretName": secret}
    if hosts:
        entry["hosts"] = list(hosts)
    return entry


def ingress(
    name: str,
    *rules: dict[str, Any],
    tls_entries: list[Any] | None = None,
    created: str | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "default"}
    if created is not None:
        metadata["creationTimestamp"] = created
    spec: dict[str, Any] = {"rules": list(rules)}
    if tls_entries is not None:
        spec["tls"] = tls_entries
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata,
        "spec": spec,
    }


# --- reading the result -------------------------------------------------------


def run(*bodies: Mapping[str, Any], now: datetime | None = None) -> ir.Translation:
    store = Store()
    store.replace_all([parse_object(body) for body in (service("svc"), *bodies)], origin="test")
    return translate(store.view(), settings=SETTINGS, now=now)


def chains(translation: ir.Translation) -> dict[str, tuple[str, ...]]:
    """{certificate: server names}; {} without an HTTPS listener."""
    if not translation.config.https_listeners:
        return {}
    (listener,) = translation.config.https_listeners
    assert (listener.name, listener.address, listener.port) == ("https", "127.0.0.1", 8443)
    for chain in listener.filter_chains:
        assert chain.route_config == f"https/{chain.certificate}"
    return {chain.certificate: chain.server_names for chain in listener.filter_chains}


def route_config(translation: ir.Translation, name: str) -> dict[str, tuple[str, ...]]:
    """{virtual host name: domains} of one route config."""
    (found,) = [rc for rc in translation.config.route_configs if rc.name == name]
    return {vhost.name: vhost.domains for vhost in found.virtual_hosts}


def reasons(translation: ir.Translation, name: str) -> set[tuple[str, str, str]]:
    return {
        (c.type, c.status.value, c.reason)
        for c in translation.conditions
        if c.object.name == name and c.status is not ir.ConditionStatus.TRUE
    }


def http_hosts(translation: ir.Translation) -> list[str]:
    (http,) = [rc for rc in translation.config.route_configs if rc.name == "http"]
    return [vhost.name for vhost in http.virtual_hosts]


# --- hostnames ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("a.example.com", "a.example.com", True),
        ("*.example.com", "a.example.com", True),
        ("*.example.com", "*.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.b.example.com", False),
        ("*.example.com", "a.example.org", False),
        ("a.example.com", "b.example.com", False),
        ("*.com", "example.com", False),
    ],
)
def test_a_wildcard_covers_one_whole_label(pattern: str, host: str, expected: bool) -> None:
    assert covers(pattern, host) is expected


# --- which chain a host lands on ----------------------------------------------


def test_one_chain_per_certificate_holding_every_host_it_covers(
    wildcard: Issued, other: Issued
) -> None:
    translation = run(
        tls_secret("wildcard", wildcard),
        tls_secret("other", other),
        ingress(
            "site",
            rule("a.example.com"),
            rule("b.example.com"),
            rule("other.test"),
            rule("plain.test"),
            rule("deep.sub.example.com"),
            tls_entries=[tls("wildcard", "a.example.com"), tls("other", "other.test")],
        ),
    )
    # b.example.com is in no spec.tls, but shares a.example.com's certificate,
    # so a client may coalesce them: it must be routed on that connection.
    assert chains(translation) == {
        "default/other": ("other.test",),
        "default/wildcard": ("*.example.com", "a.example.com", "b.example.com"),
    }
    assert route_config(translation, "https/default/wildcard") == {
        "a.example.com": ("a.example.com",),
        "b.example.com": ("b.example.com",),
        # The rest of the wildcard: an HTTP answer (here 404), not a failed handshake.
        "certificate_names": ("*.example.com",),
        "misdirected_request": ("*",),
    }
    assert route_config(translation, "https/default/other") == {
        "other.test": ("other.test",),
        "misdirected_request": ("*",),
    }
    # Hosts no certificate covers stay on plain HTTP only; every host is on HTTP.
    assert http_hosts(translation) == [
        "a.example.com",
        "b.example.com",
        "deep.sub.example.com",
        "other.test",
        "plain.test",
    ]
    assert [c.name for c in translation.config.certificates] == [
        "default/other",
        "default/wildcard",
    ]
    assert reasons(translation, "site") == set()


def test_the_https_route_configs_reuse_the_http_virtual_hosts(wildcard: Issued) -> None:
    translation = run(
        tls_secret("wildcard", wildcard),
        ingress("site", rule("a.example.com"), tls_entries=[tls("wildcard", "a.example.com")]),
    )
    by_name = {rc.name: rc for rc in translation.config.route_configs}
    assert by_name["https/default/wildcard"].virtual_hosts[0] == by_name["http"].virtual_hosts[0]


def test_misdirected_requests_are_answered_421_last() -> None:
    ca = CertificateAuthority()
    translation = run(
        tls_secret("wildcard", ca.issue("*.example.com")),
        ingress("site", rule("a.example.com"), tls_entries=[tls("wildcard", "a.example.com")]),
    )
    (config,) = [rc for rc in translation.config.route_configs if rc.name.startswith("https/")]
    last = config.virtual_hosts[-1]
    assert last.domains[-1] == "*"
    (route,) = last.routes
    assert route.path == ir.PathMatch(type=ir.PathMatchType.STRING_PREFIX, value="/")
    assert isinstance(route.action, ir.DirectResponse) and route.action.status == 421


def test_without_tls_there_is_no_https_listener() -> None:
    translation = run(ingress("site", rule("a.example.com")))
    assert translation.config.https_listeners == ()
    assert translation.config.certificates == ()
    assert [rc.name for rc in translation.config.route_configs] == ["http"]


def test_an_exact_name_beats_a_wildcard_and_the_wildcard_sends_that_host_away(
    ca: CertificateAuthority, wildcard: Issued
) -> None:
    translation = run(
        tls_secret("wildcard", wildcard),
        tls_secret("exact", ca.issue("x.example.com")),
        ingress(
            "site",
            rule("a.example.com"),
            rule("x.example.com"),
            tls_entries=[tls("wildcard", "a.example.com"), tls("exact", "other.example.com")],
        ),
    )
    assert chains(translation)["default/wildcard"] == ("*.example.com", "a.example.com")
    # The exact certificate took x.example.com (no spec.tls names it).
    assert chains(translation)["default/exact"] == ("other.example.com", "x.example.com")
    # On a wildcard connection, x.example.com belongs to the other certificate.
    wildcard_routes = route_config(translation, "https/default/wildcard")
    assert wildcard_routes["misdirected_request"] == ("other.example.com", "x.example.com", "*")
    assert reasons(translation, "site") == {("CertificateValid", "False", "HostNotCovered")}


def test_a_host_spec_tls_names_keeps_its_certificate_over_a_better_fitting_one(
    ca: CertificateAuthority, wildcard: Issued
) -> None:
    translation = run(
        tls_secret("wildcard", wildcard),
        tls_secret("exact", ca.issue("x.example.com", "y.example.com")),
        ingress(
            "site",
            rule("x.example.com"),
            rule("y.example.com"),
            tls_entries=[tls("wildcard", "x.example.com"), tls("exact", "y.example.com")],
        ),
    )
    assert chains(translation) == {
        "default/exact": ("y.example.com",),
        "default/wildcard": ("*.example.com", "x.example.com"),
    }


def test_a_wildcard_in_spec_tls_takes_the_hosts_under_it(
    ca: CertificateAuthority, wildcard: Issued
) -> None:
    translation = run(
        tls_secret("wildcard", wildcard),
        tls_secret("exact", ca.issue("a.example.com")),
        ingress("one", rule("a.example.com"), tls_entries=[tls("exact")]),
        ingress("two", rule("b.example.com"), tls_entries=[tls("wildcard", "*.example.com")]),
    )
    assert chains(translation) == {
        "default/exact": ("a.example.com",),
        "default/wildcard": ("*.example.com", "b.example.com"),
    }


def test_an_entry_without_hosts_covers_the_ingress_rule_hosts_its_certificate_covers(
    wildcard: Issued,
) -> None:
    translation = run(
        tls_secret("wildcard", wildcard),
        ingress("site", rule("a.example.com"), rule("a.other.test"), tls_entries=[tls("wildcard")]),
    )
    assert chains(translation) == {"default/wildcard": ("*.example.com", "a.example.com")}


def test_a_wildcard_rule_host_is_served_by_the_wildcard_certificate(wildcard: Issued) -> None:
    translation = run(
        tls_secret("wildcard", wildcard),
        ingress(
            "site", rule("*.example.com"), rule("a.example.com"), tls_entries=[tls("wildcard")]
        ),
    )
    assert chains(translation) == {"default/wildcard": ("*.example.com", "a.example.com")}
    assert route_config(translation, "https/default/wildcard") == {
        "*.example.com": ("*.example.com",),
        "a.example.com": ("a.example.com",),
        "misdirected_request": ("*",),
    }


def test_names_without_rules_get_the_catch_all_routes(wildcard: Issued) -> None:
    translation = run(
        tls_secret("wildcard", wildcard),
        ingress(
            "site",
            rule(None),
            rule("a.example.com"),
            tls_entries=[tls("wildcard", "a.example.com", "api.example.com")],
        ),
    )
    (config,) = [rc for rc in translation.config.route_configs if rc.name.startswith("https/")]
    vhosts = {vhost.name: vhost for vhost in config.virtual_hosts}
    assert vhosts["certificate_names"].domains == ("*.example.com", "api.example.com")
    (http,) = [rc for rc in translation.config.route_configs if rc.name == "http"]
    (catch_all,) = [vhost for vhost in http.virtual_hosts if vhost.name == "*"]
    assert vhosts["certificate_names"].routes == catch_all.routes


def test_two_certificates_for_one_host_the_older_ingress_wins(
    ca: CertificateAuthority, wildcard: Issued
) -> None:
    translation = run(
        tls_secret("wildcard", wildcard),
        tls_secret("exact", ca.issue("a.example.com")),
        ingress(
            "new",
            rule(None),
            tls_entries=[tls("exact", "a.example.com")],
            created="2025-01-01T00:00:00Z",
        ),
        ingress(
            "old",
            rule("a.example.com"),
            tls_entries=[tls("wildcard", "a.example.com")],
            created="2024-01-01T00:00:00Z",
        ),
    )
    assert chains(translation) == {"default/wildcard": ("*.example.com", "a.example.com")}
    assert reasons(translation, "new") == {("Accepted", "False", "CertificateConflict")}
    assert reasons(translation, "old") == set()
    (message,) = [c.message for c in translation.conditions if c.reason == "CertificateConflict"]
    assert "Secret default/wildcard" in message and "Ingress default/old" in message


def test_server_names_are_unique_across_chains(ca: CertificateAuthority) -> None:
    # Two wildcard certificates for one domain: Envoy refuses a server name
    # on two chains, so the wildcard name goes to one of them only.
    translation = run(
        tls_secret("one", ca.issue("*.example.com")),
        tls_secret("two", ca.issue("*.example.com")),
        ingress("a", rule("a.example.com"), tls_entries=[tls("one", "a.example.com")]),
        ingress("b", rule("b.example.com"), tls_entries=[tls("two", "b.example.com")]),
    )
    assert chains(translation) == {
        "default/one": ("*.example.com", "a.example.com"),
        "default/two": ("b.example.com",),
    }
    assert route_config(translation, "https/default/one")["misdirected_request"] == (
        "b.example.com",
        "*",
    )


# --- broken Secrets -----------------------------------------------------------


def _broken_secrets(ca: CertificateAuthority, good: Issued) -> dict[str, dict[str, Any]]:
    encrypted = ca.issue("a.example.com")
    key = serialization.load_pem_private_key(encrypted.key_pem.encode(), password=None)
    encrypted_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    ).decode()
    bad_base64 = tls_secret("s", good)
    bad_base64["data"]["tls.crt"] = "not base64!"
    no_key = tls_secret("s", good)
    del no_key["data"]["tls.key"]
    return {
        "InvalidCertificate": tls_secret("s", good, cert_pem="-----BEGIN CERTIFICATE-----\nxx\n"),
        "InvalidKey": tls_secret("s", good, key_pem="not a key"),
        "KeyMismatch": tls_secret("s", good, key_pem=ca.issue("a.example.com").key_pem),
        "encrypted": tls_secret("s", good, key_pem=encrypted_pem),
        "rsa-1024": tls_secret("s", ca.issue("a.example.com", key_type="rsa-1024")),
        "p224": tls_secret("s", ca.issue("a.example.com", key_type="p224")),
        "InvalidSecret": tls_secret("s", good, secret_type="Opaque"),
        "bad-base64": bad_base64,
        "no-key": no_key,
    }


BROKEN = {
    "InvalidCertificate": "InvalidCertificate",
    "InvalidKey": "InvalidKey",
    "KeyMismatch": "KeyMismatch",
    "encrypted": "InvalidKey",
    "rsa-1024": "InvalidKey",
    "p224": "InvalidKey",
    "InvalidSecret": "InvalidSecret",
    "bad-base64": "InvalidSecret",
    "no-key": "InvalidSecret",
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_secret_costs_only_its_hosts_their_tls(
    case: str, ca: CertificateAuthority, wildcard: Issued, other: Issued
) -> None:
    broken = _broken_secrets(ca, wildcard)[case]
    translation = run(
        broken,
        tls_secret("other", other),
        ingress(
            "site",
            rule("a.example.com"),
            rule("other.test"),
            tls_entries=[tls("s", "a.example.com"), tls("other", "other.test")],
        ),
    )
    assert chains(translation) == {"default/other": ("other.test",)}
    assert reasons(translation, "site") == {("ResolvedRefs", "False", BROKEN[case])}
    # Still served on plain HTTP, and the Ingress is still accepted.
    assert "a.example.com" in http_hosts(translation)
    assert ("Accepted", "True", "Accepted") in {
        (c.type, c.status.value, c.reason) for c in translation.conditions
    }
    # Never a word of the key in what users (and logs) see.
    for condition in translation.conditions:
        assert "PRIVATE" not in condition.message
        assert wildcard.key_pem.splitlines()[1] not in condition.message


def test_a_missing_secret_is_reported_and_the_rest_flows(other: Issued) -> None:
    translation = run(
        tls_secret("other", other),
        ingress(
            "site",
            rule("a.example.com"),
            rule("other.test"),
            tls_entries=[tls("missing", "a.example.com"), tls("other", "other.test")],
        ),
    )
    assert chains(translation) == {"default/other": ("other.test",)}
    assert reasons(translation, "site") == {("ResolvedRefs", "False", "SecretNotFound")}
    (message,) = [c.message for c in translation.conditions if c.reason == "SecretNotFound"]
    assert message.startswith("spec.tls[0]: Secret default/missing: not found")


def test_a_broken_secret_falls_back_to_another_certificate_that_covers_the_host(
    ca: CertificateAuthority, wildcard: Issued
) -> None:
    translation = run(
        tls_secret("wildcard", wildcard),
        ingress("one", rule("a.example.com"), tls_entries=[tls("missing", "a.example.com")]),
        ingress("two", rule("b.example.com"), tls_entries=[tls("wildcard", "b.example.com")]),
    )
    assert chains(translation) == {
        "default/wildcard": ("*.example.com", "a.example.com", "b.example.com")
    }


def test_secrets_of_another_namespace_are_not_used(wildcard: Issued) -> None:
    elsewhere = tls_secret("wildcard", wildcard, namespace="other")
    translation = run(
        elsewhere,
        ingress("site", rule("a.example.com"), tls_entries=[tls("wildcard", "a.example.com")]),
    )
    assert chains(translation) == {}
    assert reasons(translation, "site") == {("ResolvedRefs", "False", "SecretNotFound")}


def test_an_expired_certificate_is_served_with_a_warning(ca: CertificateAuthority) -> None:
    expired = ca.issue("a.example.com", valid_days=(-30, -1))
    translation = run(
        tls_secret("old", expired),
        ingress("site", rule("a.example.com"), tls_entries=[tls("old", "a.example.com")]),
    )
    assert chains(translation) == {"default/old": ("a.example.com",)}
    assert reasons(translation, "site") == {("CertificateValid", "False", "CertificateExpired")}
    # Checked at the time translate is told.
    earlier = datetime.now(UTC) - timedelta(days=10)
    assert reasons(run(tls_secret("old", expired), _site_old(), now=earlier), "site") == set()


def _site_old() -> dict[str, Any]:
    return ingress("site", rule("a.example.com"), tls_entries=[tls("old", "a.example.com")])


def test_a_certificate_without_dns_names_covers_only_what_spec_tls_names(
    ca: CertificateAuthority,
) -> None:
    translation = run(
        tls_secret("bare", ca.issue()),
        ingress(
            "site",
            rule("a.example.com"),
            rule("b.example.com"),
            tls_entries=[tls("bare", "a.example.com")],
        ),
    )
    assert chains(translation) == {"default/bare": ("a.example.com",)}
    assert reasons(translation, "site") == {
        ("CertificateValid", "False", "NoDNSNames"),
        ("CertificateValid", "False", "HostNotCovered"),
    }


# --- what a certificate holds -------------------------------------------------


def test_string_data_and_data_give_one_certificate(wildcard: Issued) -> None:
    site = ingress("site", rule("a.example.com"), tls_entries=[tls("wildcard", "a.example.com")])
    from_data = run(tls_secret("wildcard", wildcard), site).config.certificates
    from_string_data = run(
        tls_secret("wildcard", wildcard, string_data=True), site
    ).config.certificates
    assert from_data == from_string_data
    (certificate,) = from_data
    assert certificate.sans == ("*.example.com",)
    assert certificate.cert_chain_pem == wildcard.cert_pem
    assert certificate.private_key_pem == wildcard.key_pem


def test_base64_folded_over_lines_is_read(wildcard: Issued) -> None:
    secret = tls_secret("wildcard", wildcard)
    value = base64.b64encode(wildcard.cert_pem.encode()).decode()
    secret["data"]["tls.crt"] = "\n".join(value[i : i + 76] for i in range(0, len(value), 76))
    translation = run(
        secret,
        ingress("site", rule("a.example.com"), tls_entries=[tls("wildcard", "a.example.com")]),
    )
    assert chains(translation) == {"default/wildcard": ("*.example.com", "a.example.com")}


def test_a_chain_keeps_its_intermediates_in_order(ca: CertificateAuthority) -> None:
    leaf = ca.issue("a.example.com", key_type="rsa")
    chain = leaf.cert_pem + ca.pem.decode()
    translation = run(
        tls_secret("s", leaf, cert_pem=chain),
        ingress("site", rule("a.example.com"), tls_entries=[tls("s")]),
    )
    (certificate,) = translation.config.certificates
    assert certificate.cert_chain_pem == chain


def test_the_key_never_shows_in_a_repr(wildcard: Issued) -> None:
    translation = run(
        tls_secret("wildcard", wildcard),
        ingress("site", rule("a.example.com"), tls_entries=[tls("wildcard", "a.example.com")]),
    )
    key_line = wildcard.key_pem.splitlines()[1]
    assert key_line not in repr(translation)
    assert "[redacted]" in repr(translation.config.certificates[0])
    # The key is part of the value: a rotated key is a new certificate.
    (certificate,) = translation.config.certificates
    assert certificate != dataclasses.replace(certificate, private_key_pem="other")


# --- robustness and determinism -----------------------------------------------

GARBAGE_TLS: list[Any] = [
    "yes",
    {"hosts": ["a.example.com"]},
    [None, 3, "x", []],
    [{"secretName": 5}],
    [{"secretName": ""}],
    [{"secretName": "s", "hosts": "a.example.com"}],
    [{"secretName": "s", "hosts": [None, 7, "BAD HOST", "*", "a.example.com"]}],
    [{"secretName": ["s"], "hosts": [{"a": 1}]}],
]


@pytest.mark.parametrize("entries", GARBAGE_TLS)
def test_translate_never_raises_on_garbage_tls(entries: Any, wildcard: Issued) -> None:
    weird_secrets = [
        tls_secret("s", wildcard),
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t"}, "type": "x", "data": 3},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "u"},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": 5, "tls.key": None},
            "stringData": ["x"],
        },
    ]
    translation = run(
        *weird_secrets,
        ingress("g", rule("a.example.com"), tls_entries=entries),
        ingress("h", rule("b.example.com"), tls_entries=[tls("t"), tls("u"), tls("s")]),
    )
    assert all(c.reason != "InternalError" for c in translation.conditions)
    assert reasons(translation, "g")


def _world(ca_certs: dict[str, Issued]) -> list[dict[str, Any]]:
    return [
        tls_secret("wildcard", ca_certs["wildcard"]),
        tls_secret("other", ca_certs["other"]),
        tls_secret("exact", ca_certs["exact"]),
        ingress(
            "one",
            rule("a.example.com"),
            rule("x.example.com"),
            tls_entries=[tls("wildcard", "a.example.com"), tls("missing")],
            created="2024-01-01T00:00:00Z",
        ),
        ingress(
            "two",
            rule("other.test"),
            rule(None),
            tls_entries=[tls("other"), tls("exact", "a.example.com")],
        ),
        ingress("three", rule("x.example.com"), tls_entries=[tls("exact")]),
    ]


def test_output_does_not_depend_on_input_order(
    ca: CertificateAuthority, wildcard: Issued, other: Issued
) -> None:
    issued = {"wildcard": wildcard, "other": other, "exact": ca.issue("x.example.com")}
    now = datetime.now(UTC)
    expected = run(*_world(issued), now=now)
    assert len(chains(expected)) == 3
    for seed in range(5):
        shuffled = _world(issued)
        random.Random(seed).shuffle(shuffled)
        assert run(*shuffled, now=now) == expected


def test_a_secret_is_parsed_once_per_content(
    monkeypatch: pytest.MonkeyPatch, ca: CertificateAuthority, wildcard: Issued
) -> None:
    site = ingress("site", rule("a.example.com"), tls_entries=[tls("wildcard"), tls("gone")])
    both = (tls_secret("wildcard", wildcard), tls_secret("gone", wildcard))
    expected = [run(*both, site), run(both[0], site)]
    parsed: list[str] = []
    real = certificates_module.parse_certificate

    def counting(secret: Any) -> Any:
        parsed.append(secret.name)
        return real(secret)

    monkeypatch.setattr(certificates_module, "parse_certificate", counting)
    cache = CertificateCache()

    def translated(*secrets: dict[str, Any]) -> ir.Translation:
        store = Store()
        bodies = (service("svc"), site, *secrets)
        store.replace_all([parse_object(body) for body in bodies], origin="test")
        return translate(store.view(), settings=SETTINGS, certificates=cache)

    # The same result as without a cache.
    assert [translated(*both), translated(both[0])] == expected
    assert sorted(parsed) == ["gone", "wildcard"]
    # New content is parsed again; a Secret the last translation did not use
    # is forgotten.
    translated(tls_secret("wildcard", ca.issue("*.example.com")))
    translated(tls_secret("gone", wildcard))
    assert sorted(parsed) == ["gone", "gone", "wildcard", "wildcard"]


# --- client certificates (mTLS) -----------------------------------------------


def with_client_ca(body: dict[str, Any], secret: str, mode: str | None = None) -> dict[str, Any]:
    annotations = {"xds-ingress.io/client-ca-secret": secret}
    if mode is not None:
        annotations["xds-ingress.io/client-cert"] = mode
    body["metadata"]["annotations"] = annotations
    return body


def ca_secret(name: str, ca: CertificateAuthority) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        "type": "Opaque",
        "data": {"ca.crt": base64.b64encode(ca.pem).decode()},
    }


def validated_chains(
    translation: ir.Translation,
) -> dict[tuple[str, str | None, bool | None], tuple[str, ...]]:
    """{(certificate, CA name, required): server names}."""
    (listener,) = translation.config.https_listeners
    found = {}
    for chain in listener.filter_chains:
        validation = chain.client_validation
        key = (
            chain.certificate,
            None if validation is None else validation.ca.name,
            None if validation is None else validation.required,
        )
        found[key] = chain.server_names
    return found


def test_hosts_of_one_certificate_that_differ_in_client_checks_get_a_chain_each(
    wildcard: Issued,
) -> None:
    clients = CertificateAuthority("clients")
    translation = run(
        tls_secret("wild", wildcard),
        ca_secret("clients", clients),
        with_client_ca(
            ingress("secure", rule("secure.example.com"), tls_entries=[tls("wild")]), "clients"
        ),
        with_client_ca(
            ingress("relaxed", rule("relaxed.example.com"), tls_entries=[tls("wild")]),
            "clients",
            "optional",
        ),
        ingress("public", rule("public.example.com"), tls_entries=[tls("wild")]),
    )
    assert validated_chains(translation) == {
        # The chain without checks also takes the wildcard's other names.
        ("default/wild", None, None): ("*.example.com", "public.example.com"),
        ("default/wild", "default/clients/ca.crt", True): ("secure.example.com",),
        ("default/wild", "default/clients/ca.crt", False): ("relaxed.example.com",),
    }
    # Each chain routes only its own hosts; the others are misdirected (421).
    names = {rc.name for rc in translation.config.route_configs}
    secure_routes = "https/default/wild+client-ca=default/clients/ca.crt+required"
    assert secure_routes in names
    assert route_config(translation, secure_routes) == {
        "secure.example.com": ("secure.example.com",),
        "misdirected_request": ("*",),
    }
    assert route_config(translation, "https/default/wild")["misdirected_request"] == (
        "relaxed.example.com",
        "secure.example.com",
        "*",
    )
    (ca_bundle,) = {
        chain.client_validation.ca
        for chain in translation.config.https_listeners[0].filter_chains
        if chain.client_validation is not None
    }
    assert ca_bundle.ca_pem == clients.pem.decode()
    for name in ("secure", "relaxed", "public"):
        assert ("Accepted", "True", "Accepted") in {
            (c.type, c.status.value, c.reason)
            for c in translation.conditions
            if c.object.name == name
        }


def test_client_checks_that_cannot_be_given_fail_closed_with_a_condition(
    wildcard: Issued,
) -> None:
    first = CertificateAuthority("first")
    second = CertificateAuthority("second")
    translation = run(
        tls_secret("wild", wildcard),
        ca_secret("first", first),
        ca_secret("second", second),
        with_client_ca(
            ingress("missing", rule("m.example.com"), tls_entries=[tls("wild")]), "nope"
        ),
        with_client_ca(
            ingress("one", rule("both.example.com"), tls_entries=[tls("wild")]), "first"
        ),
        with_client_ca(
            ingress("two", rule("both.example.com"), tls_entries=[tls("wild")]), "second"
        ),
    )
    # No validation context for either host: their routes require a validated
    # client certificate, which no connection then has (403).
    assert set(validated_chains(translation)) == {("default/wild", None, None)}
    policies = {
        route.action.policy.client_certificate_required
        for rc in translation.config.route_configs
        for vhost in rc.virtual_hosts
        for route in vhost.routes
        if isinstance(route.action, ir.Forward)
    }
    assert policies == {True}
    by_name = {
        name: {
            (c.type, c.status.value, c.reason)
            for c in translation.conditions
            if c.object.name == name
        }
        for name in ("missing", "one", "two")
    }
    assert ("ResolvedRefs", "False", "SecretNotFound") in by_name["missing"]
    assert ("Accepted", "False", "ClientCertificateConflict") in by_name["one"]
    assert ("Accepted", "False", "ClientCertificateConflict") in by_name["two"]
