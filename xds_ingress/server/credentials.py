"""mTLS server credentials for the xDS and admin ports, reloaded when the files change.

cert-manager (or a person) renews a certificate by rewriting the Secret's
files; the kubelet swaps the mounted folder atomically. gRPC asks us for a
certificate configuration before every new TLS handshake, so a changed file
is picked up by the next connection without a restart. Connections already
open keep the certificate they were made with until they reconnect.

The files are checked with `cryptography` before they are served: gRPC
itself would only fail each handshake, with an error the client sees and
the operator does not.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from xds_ingress.settings import ServerTls

log = logging.getLogger(__name__)


class TlsFilesError(ValueError):
    """A certificate, key or CA file is missing or unusable; the message names it."""


@dataclass(frozen=True, slots=True)
class _Loaded:
    cert: bytes
    key: bytes
    client_ca: bytes
    # (mtime_ns, size) of each file when read: what "changed" means.
    stamps: tuple[tuple[int, int], ...]


def _stamps(tls: ServerTls) -> tuple[tuple[int, int], ...]:
    stats = [os.stat(path) for path in (tls.cert_file, tls.key_file, tls.client_ca_file)]
    return tuple((stat.st_mtime_ns, stat.st_size) for stat in stats)


def _read(tls: ServerTls) -> _Loaded:
    """Read and check the three files; raises TlsFilesError naming what is wrong."""
    try:
        stamps = _stamps(tls)
        cert = tls.cert_file.read_bytes()
        key = tls.key_file.read_bytes()
        client_ca = tls.client_ca_file.read_bytes()
    except OSError as error:
        raise TlsFilesError(f"cannot read {error.filename}: {error.strerror}") from None
    try:
        chain = x509.load_pem_x509_certificates(cert)
    except ValueError:
        raise TlsFilesError(f"{tls.cert_file}: no PEM certificate") from None
    try:
        private_key = serialization.load_pem_private_key(key, password=None)
    except (ValueError, TypeError):
        raise TlsFilesError(f"{tls.key_file}: no unencrypted PEM private key") from None
    if not _same_public_key(chain[0], private_key):
        raise TlsFilesError(f"{tls.key_file} is not the key of {tls.cert_file}")
    try:
        x509.load_pem_x509_certificates(client_ca)
    except ValueError:
        raise TlsFilesError(f"{tls.client_ca_file}: no PEM CA certificate") from None
    return _Loaded(cert=cert, key=key, client_ca=client_ca, stamps=stamps)


def _same_public_key(certificate: x509.Certificate, key: PrivateKeyTypes) -> bool:
    encoding = serialization.Encoding.DER
    info = serialization.PublicFormat.SubjectPublicKeyInfo
    return bool(
        certificate.public_key().public_bytes(encoding, info)
        == key.public_key().public_bytes(encoding, info)
    )


def check_server_tls(tls: ServerTls) -> None:
    """Raise TlsFilesError unless the files can be served (for the CLI's exit 2)."""
    _read(tls)


def _configuration(loaded: _Loaded) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(loaded.key, loaded.cert)], root_certificates=loaded.client_ca
    )


class _Reloader:
    """gRPC's certificate fetcher: a new configuration when the files changed.

    gRPC calls it from its own threads, once per incoming connection; a stat
    of three files is all it costs when nothing changed.
    """

    def __init__(self, tls: ServerTls, loaded: _Loaded) -> None:
        self._tls = tls
        self._stamps = loaded.stamps
        # The files as they were when reading them last failed: warned once.
        self._failed_stamps: tuple[tuple[int, int], ...] | None = None
        self._lock = threading.Lock()

    def __call__(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            stamps: tuple[tuple[int, int], ...] | None = None
            try:
                stamps = _stamps(self._tls)
                if stamps in (self._stamps, self._failed_stamps):
                    return None
                loaded = _read(self._tls)
            except (OSError, TlsFilesError) as error:
                # Half-written files during a renewal: keep serving the old
                # certificate and look again on the next connection.
                self._failed_stamps = stamps
                log.warning("keeping the current xDS certificate: %s", error)
                return None
            self._stamps = loaded.stamps
            log.info("xDS certificate reloaded from %s", self._tls.cert_file)
            return _configuration(loaded)


def server_credentials(tls: ServerTls) -> grpc.ServerCredentials:
    """mTLS credentials requiring a client certificate signed by the client CA.

    Raises TlsFilesError when the files are unusable now.
    """
    loaded = _read(tls)
    return grpc.dynamic_ssl_server_credentials(
        _configuration(loaded),
        # grpc-stubs omit the None ("no change") that gRPC documents and accepts.
        _Reloader(tls, loaded),  # type: ignore[arg-type]
        require_client_authentication=True,
    )
