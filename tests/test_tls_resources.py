"""The HTTPS listener and SDS secrets, checked field by field and by a real Envoy.

`envoy --mode validate` judges a static bootstrap of the built resources,
in which the listeners name static secrets instead of SDS over ADS.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2
from tls_certs import CertificateAuthority, Issued, KeyType, tls_secret

from xds_ingress import ir
from xds_ingress.bootstrap import to_json
from xds_ingress.cache import build_snapshot, consistency_errors, make_resource
from xds_ingress.resources import types
from xds_ingress.resources.builder import ResourceBuilder
from xds_ingress.resources.static import render_static_bootstrap
from xds_ingress.sources.objects import parse_object
from xds_ingress.store import Store
from xds_ingress.translate import ListenerSettings, translate

ENVOY = Path(sys.executable).parent / "envoy"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority()


@pytest.fixture(scope="module")
def issued(ca: CertificateAuthority) -> dict[str, Issued]:
    return {
        "wildcard": ca.issue("*.example.com"),
        "other": ca.issue("other.test", key_type="rsa"),
        "exact": ca.issue("x.example.com", "y.example.com"),
    }


def _rule(host: str | None, service: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "http": {
            "paths": [
                {
                    "path": "/",
                    "pathType": "Prefix",
                    "backend": {"service": {"name": service, "port": {"number": 50051}}},
                }
            ]
        }
    }
    if host is not None:
        entry["host"] = host
    return entry


def _tls_entry(name: str, cert: Issued) -> dict[str, Any]:
    if name == "wildcard":
        # b.example.com and *.example.com join by the certificate covering them.
        return {"secretName": name, "hosts": ["a.example.com", "api.example.com"]}
    if name in ("other", "exact"):
        return {"secretName": name}  # the Ingress's hosts the certificate covers
    return {"secretName": name, "hosts": list(cert.names)}


def translated(
    issued: dict[str, Issued],
    *,
    min_tls_version: ir.TlsVersion = ir.TlsVersion.TLS1_2,
    expected: int = 3,
) -> ir.Config:
    """What translate makes of a world with three certificates, one of them shared."""
    bodies: list[dict[str, Any]] = [
        *(tls_secret(name, cert) for name, cert in issued.items()),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "greeter", "namespace": "default"},
            "spec": {"ports": [{"port": 50051, "appProtocol": "kubernetes.io/h2c"}]},
        },
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "site", "namespace": "default"},
            "spec": {
                "rules": [
                    _rule(host, "greeter")
                    for host in (
                        "a.example.com",
                        "b.example.com",
                        "*.example.com",
                        "x.example.com",
                        "other.test",
                        "plain.test",
                        None,
                    )
                ],
                "tls": [_tls_entry(name, cert) for name, cert in issued.items()],
            },
        },
    ]
    store = Store()
    store.replace_all([parse_object(body) for body in bodies], origin="test")
    settings = ListenerSettings(
        listen_address="127.0.0.1",
        http_port=8080,
        https_port=8443,
        claim_classless=True,
        min_tls_version=min_tls_version,
    )
    translation = translate(store.view(), settings=settings)
    assert len(translation.config.certificates) == expected
    return translation.config


def validate(tmp_path: Path, config: ir.Config, *, name: str) -> subprocess.Popen[str]:
    document = render_static_bootstrap(
        ResourceBuilder().build(config),
        node_id="validate",
        node_cluster="xds-ingress",
        admin_address=None,
    )
    path = tmp_path / f"{name}.json"
    path.write_text(to_json(document))
    return subprocess.Popen(
        [str(ENVOY), "--mode", "validate", "-c", str(path), "--log-level", "warn"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_envoy_accepts_what_translate_makes_of_tls(
    tmp_path: Path, issued: dict[str, Issued]
) -> None:
    running = {
        version: validate(tmp_path, translated(issued, min_tls_version=version), name=version.name)
        for version in ir.TlsVersion
    }
    for version, process in running.items():
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, f"{version}: {output}"


def test_envoy_loads_every_key_type_translate_accepts(
    tmp_path: Path, ca: CertificateAuthority
) -> None:
    key_types: tuple[KeyType, ...] = ("ec", "p384", "rsa", "ed25519")
    issued = {
        key_type: ca.issue(f"{key_type}.example.com", key_type=key_type) for key_type in key_types
    }
    config = translated(issued, expected=len(key_types))
    output, _ = validate(tmp_path, config, name="keys").communicate(timeout=60)
    assert "OK" in output, output


def test_envoy_would_refuse_a_server_name_on_two_chains(
    tmp_path: Path, issued: dict[str, Issued]
) -> None:
    # Proves the judge looks: translate never makes this.
    config = translated(issued)
    (listener,) = config.https_listeners
    first, second, *rest = listener.filter_chains
    clashing = dataclasses.replace(second, server_names=(*second.server_names, "a.example.com"))
    config = dataclasses.replace(
        config,
        https_listeners=(dataclasses.replace(listener, filter_chains=(first, clashing, *rest)),),
    )
    output, _ = validate(tmp_path, config, name="clash").communicate(timeout=60)
    assert "multiple filter chains with overlapping matching rules" in output, output


# --- what the builder produces ------------------------------------------------


@pytest.fixture
def built(issued: dict[str, Issued]) -> dict[str, dict[str, Any]]:
    return ResourceBuilder().build(translated(issued))


def test_every_type_is_built_and_the_snapshot_is_consistent(
    built: dict[str, dict[str, Any]],
) -> None:
    assert list(built) == list(types.ADS_ORDER)
    assert sorted(built[types.LISTENER]) == ["http", "https"]
    assert sorted(built[types.SECRET]) == ["default/exact", "default/other", "default/wildcard"]
    assert sorted(built[types.ROUTE]) == [
        "http",
        "https/default/exact",
        "https/default/other",
        "https/default/wildcard",
    ]
    assert consistency_errors(build_snapshot(built)) == []


def _tls_context(chain: Any) -> Any:
    context = tls_pb2.DownstreamTlsContext()
    assert chain.transport_socket.typed_config.Unpack(context)
    return context


def test_the_https_listener_picks_a_chain_by_sni(built: dict[str, dict[str, Any]]) -> None:
    listener = built[types.LISTENER]["https"]
    assert listener.address.socket_address.port_value == 8443
    (inspector,) = listener.listener_filters
    assert inspector.name == "envoy.filters.listener.tls_inspector"
    assert not listener.HasField("default_filter_chain")
    by_name = {chain.name: chain for chain in listener.filter_chains}
    assert list(by_name["default/wildcard"].filter_chain_match.server_names) == [
        "*.example.com",
        "a.example.com",
        "api.example.com",
        "b.example.com",
    ]
    assert list(by_name["default/exact"].filter_chain_match.server_names) == ["x.example.com"]
    for name, chain in by_name.items():
        assert chain.transport_socket.name == "envoy.transport_sockets.tls"
        (network_filter,) = chain.filters
        hcm = hcm_pb2.HttpConnectionManager()
        assert network_filter.typed_config.Unpack(hcm)
        assert hcm.rds.route_config_name == f"https/{name}"
        assert hcm.rds.config_source.WhichOneof("config_source_specifier") == "ads"
        assert hcm.codec_type == hcm_pb2.HttpConnectionManager.AUTO


def test_each_chain_takes_its_certificate_over_sds_and_offers_h2(
    built: dict[str, dict[str, Any]],
) -> None:
    for chain in built[types.LISTENER]["https"].filter_chains:
        common = _tls_context(chain).common_tls_context
        assert list(common.alpn_protocols) == ["h2", "http/1.1"]
        assert common.tls_params.tls_minimum_protocol_version == common_pb2.TlsParameters.TLSv1_2
        assert not common.tls_certificates  # never inline
        (sds,) = common.tls_certificate_sds_secret_configs
        assert sds.name == chain.name
        assert sds.sds_config.WhichOneof("config_source_specifier") == "ads"
        assert sds.sds_config.resource_api_version == config_source_pb2.V3


def test_the_minimum_tls_version_is_configurable(issued: dict[str, Issued]) -> None:
    built = ResourceBuilder().build(translated(issued, min_tls_version=ir.TlsVersion.TLS1_3))
    for chain in built[types.LISTENER]["https"].filter_chains:
        params = _tls_context(chain).common_tls_context.tls_params
        assert params.tls_minimum_protocol_version == common_pb2.TlsParameters.TLSv1_3


def test_keys_are_only_in_the_secrets(
    built: dict[str, dict[str, Any]], issued: dict[str, Issued]
) -> None:
    key_lines = [
        line.encode()
        for cert in issued.values()
        for line in cert.key_pem.splitlines()
        if "PRIVATE KEY" not in line
    ]
    for type_url, resources in built.items():
        if type_url == types.SECRET:
            continue
        for name, message in resources.items():
            # What Envoy is sent.
            data = make_resource(name, type_url, message).any_bytes
            assert b"PRIVATE KEY" not in data
            assert not [line for line in key_lines if line in data]
    secret = built[types.SECRET]["default/wildcard"]
    assert secret.tls_certificate.private_key.inline_string == issued["wildcard"].key_pem
    assert secret.tls_certificate.certificate_chain.inline_string == issued["wildcard"].cert_pem


def test_a_rotated_certificate_changes_only_its_secret(
    ca: CertificateAuthority, issued: dict[str, Issued]
) -> None:
    builder = ResourceBuilder()
    first = builder.build(translated(issued))
    rotated = dict(issued, wildcard=ca.issue("*.example.com"))
    second = builder.build(translated(rotated))
    changed = {
        (type_url, name)
        for type_url, resources in second.items()
        for name, message in resources.items()
        if first[type_url].get(name) is not message
    }
    assert changed == {(types.SECRET, "default/wildcard")}


def test_the_static_bootstrap_names_static_secrets(built: dict[str, dict[str, Any]]) -> None:
    document = render_static_bootstrap(built, node_id="n", node_cluster="c", admin_address=None)
    static = document["static_resources"]
    assert sorted(secret["name"] for secret in static["secrets"]) == sorted(built[types.SECRET])
    (https,) = [listener for listener in static["listeners"] if listener["name"] == "https"]
    for chain in https["filter_chains"]:
        context = chain["transport_socket"]["typed_config"]["common_tls_context"]
        (sds,) = context["tls_certificate_sds_secret_configs"]
        assert sds == {"name": chain["name"]}
        assert "route_config" in chain["filters"][0]["typed_config"]
    # The builder's shared messages are left as they were.
    for chain in built[types.LISTENER]["https"].filter_chains:
        (sds,) = _tls_context(chain).common_tls_context.tls_certificate_sds_secret_configs
        assert sds.HasField("sds_config")


def test_client_validation_names_the_ca_over_sds_on_a_chain_of_its_own() -> None:
    ca_bundle = ir.CaBundle(name="default/clients/ca.crt", ca_pem="-----BEGIN CERTIFICATE-----\n")

    def chain(server_name: str, *, required: bool | None) -> ir.TlsFilterChain:
        validation = None
        if required is not None:
            validation = ir.ClientValidation(ca=ca_bundle, required=required)
        suffix = "" if required is None else f"+{required}"
        return ir.TlsFilterChain(
            certificate="default/site",
            server_names=(server_name,),
            route_config=f"https/default/site{suffix}",
            client_validation=validation,
        )

    listener = ir.HttpsListener(
        name="https",
        address="127.0.0.1",
        port=8443,
        filter_chains=(
            chain("public.test", required=None),
            chain("secure.test", required=True),
            chain("relaxed.test", required=False),
        ),
    )
    built = ResourceBuilder().build(ir.Config(https_listeners=(listener,)))
    message = built[types.LISTENER]["https"]
    # Names are unique even though the three share a certificate.
    assert [c.name for c in message.filter_chains] == [
        "default/site",
        "https/default/site+True",
        "https/default/site+False",
    ]
    public, secure, relaxed = (_tls_context(c) for c in message.filter_chains)
    assert not public.common_tls_context.HasField("validation_context_sds_secret_config")
    assert not public.HasField("require_client_certificate")
    for context, required in ((secure, True), (relaxed, False)):
        sds = context.common_tls_context.validation_context_sds_secret_config
        assert (sds.name, sds.sds_config.HasField("ads")) == (ca_bundle.name, True)
        assert context.require_client_certificate.value is required
    # The CA is sent once, as a validation-context secret; never in the listener.
    assert built[types.SECRET][ca_bundle.name].validation_context.trusted_ca.inline_string == (
        ca_bundle.ca_pem
    )
    assert "BEGIN CERTIFICATE" not in str(message)
