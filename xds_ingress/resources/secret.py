"""ir.TlsCertificate → envoy.extensions.transport_sockets.tls.v3.Secret (SDS).

The only place a private key is put in an Envoy resource. Listeners name the
secret (see listener.py) and Envoy fetches it over ADS, so a rotated
certificate changes this one resource and never touches a listener, and the
key never appears in a listener, a listener's config dump or its NACK.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from xds_ingress import ir
from xds_ingress.resources.core import ads_config_source


def build_secret(certificate: ir.TlsCertificate) -> secret_pb2.Secret:
    return secret_pb2.Secret(
        name=certificate.name,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_string=certificate.cert_chain_pem),
            private_key=base_pb2.DataSource(inline_string=certificate.private_key_pem),
        ),
    )


def build_ca_secret(bundle: ir.CaBundle) -> secret_pb2.Secret:
    """The CAs a peer's certificate must chain to; what else to check stays with the user.

    Only the trust anchors live here: the names to match (a backend's SNI)
    are per cluster and sit inline beside the reference, in a combined
    validation context, so one CA Secret can serve many clusters.
    """
    return secret_pb2.Secret(
        name=bundle.name,
        validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_string=bundle.ca_pem)
        ),
    )


def ca_bundles(config: ir.Config) -> tuple[ir.CaBundle, ...]:
    """Every CA a listener chain or a cluster of `config` names, each once, by name."""
    found: dict[str, ir.CaBundle] = {}
    for listener in config.https_listeners:
        for chain in listener.filter_chains:
            if chain.client_validation is not None:
                found.setdefault(chain.client_validation.ca.name, chain.client_validation.ca)
    for backend in config.backends:
        if backend.tls is not None and backend.tls.ca is not None:
            found.setdefault(backend.tls.ca.name, backend.tls.ca)
    return tuple(found[name] for name in sorted(found))


def sds_secret_config(name: str) -> secret_pb2.SdsSecretConfig:
    """A reference to the Secret `name`, fetched over the ADS stream."""
    return secret_pb2.SdsSecretConfig(name=name, sds_config=ads_config_source())
