"""Certificates for mTLS between Envoy (or an operator's tool) and the control plane.

`ControlPlanePki.create(folder)` makes a fresh CA, a server certificate for
127.0.0.1 and localhost, and a client certificate, and writes them as PEM
files: what `serve --xds-tls-cert/--xds-tls-key/--xds-client-ca` and the
bootstrap's `ClientTls` read. One CA signs both sides here, as one
cert-manager Issuer would in a cluster.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tls_certs import CertificateAuthority, key_pem, new_key

from xds_ingress.bootstrap import ClientTls
from xds_ingress.settings import ServerTls

SERVER_NAMES = ("localhost",)
SERVER_IPS = ("127.0.0.1",)


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


def issue(
    ca: CertificateAuthority,
    folder: Path,
    name: str,
    *,
    usage: x509.ObjectIdentifier,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
) -> KeyPair:
    """A certificate for `usage` (server or client auth) signed by `ca`, as two files."""
    key = new_key("ec")
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    names: list[x509.GeneralName] = [x509.DNSName(each) for each in dns]
    names += [x509.IPAddress(ipaddress.ip_address(each)) for each in ips]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    certificate = builder.sign(ca.key, hashes.SHA256())
    folder.mkdir(parents=True, exist_ok=True)
    pair = KeyPair(cert=folder / f"{name}.crt", key=folder / f"{name}.key")
    pair.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    pair.key.write_text(key_pem(key))
    return pair


@dataclass(frozen=True)
class ControlPlanePki:
    folder: Path
    ca: CertificateAuthority
    ca_file: Path
    server: KeyPair
    client: KeyPair

    @classmethod
    def create(
        cls,
        folder: Path,
        *,
        ca_name: str = "xds-ingress control plane CA",
        server_names: tuple[str, ...] = (),
    ) -> ControlPlanePki:
        """`server_names`: DNS names the server certificate carries besides localhost."""
        ca = CertificateAuthority(ca_name)
        folder.mkdir(parents=True, exist_ok=True)
        ca_file = folder / "ca.crt"
        ca_file.write_bytes(ca.pem)
        return cls(
            folder=folder,
            ca=ca,
            ca_file=ca_file,
            server=issue(
                ca,
                folder,
                "control-plane",
                usage=ExtendedKeyUsageOID.SERVER_AUTH,
                dns=(*SERVER_NAMES, *server_names),
                ips=SERVER_IPS,
            ),
            client=issue(ca, folder, "envoy", usage=ExtendedKeyUsageOID.CLIENT_AUTH),
        )

    def issue_client(self, name: str) -> KeyPair:
        return issue(self.ca, self.folder, name, usage=ExtendedKeyUsageOID.CLIENT_AUTH)

    @property
    def server_tls(self) -> ServerTls:
        return ServerTls(
            cert_file=self.server.cert, key_file=self.server.key, client_ca_file=self.ca_file
        )

    def client_tls(self, *, server_name: str | None = None) -> ClientTls:
        return ClientTls(
            cert_file=str(self.client.cert),
            key_file=str(self.client.key),
            ca_file=str(self.ca_file),
            server_name=server_name,
        )

    def serve_flags(self) -> list[str]:
        return [
            "--xds-tls-cert",
            str(self.server.cert),
            "--xds-tls-key",
            str(self.server.key),
            "--xds-client-ca",
            str(self.ca_file),
        ]

    def grpcurl_flags(self, client: KeyPair | None = None) -> list[str]:
        client = client or self.client
        return ["-cacert", str(self.ca_file), "-cert", str(client.cert), "-key", str(client.key)]

    def channel_credentials(self, client: KeyPair | None = None) -> grpc.ChannelCredentials:
        client = client or self.client
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_file.read_bytes(),
            private_key=client.key.read_bytes(),
            certificate_chain=client.cert.read_bytes(),
        )
