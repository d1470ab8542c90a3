"""One Ingress's spec.tls as requests for certificates, before Ingresses are merged.

Each entry a user got wrong is rejected here with a condition naming where it
is (e.g. `spec.tls[1].hosts[0]`); the Ingress's other entries still count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from xds_ingress.sources.objects import KubeObject
from xds_ingress.translate import fields
from xds_ingress.translate.findings import Findings
from xds_ingress.translate.validation import check_host


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsRequest:
    """ "Serve these hosts with the certificate in this Secret".

    One Ingress spec.tls entry, or one HTTPS listener of a Gateway (its
    origin), which names its hosts.
    """

    origin: KubeObject
    secret: str  # the Secret's name, in `namespace`
    # None when the entry names no hosts: then it means the Ingress's own rule
    # hosts that the certificate covers.
    hosts: tuple[str, ...] | None
    rule_hosts: tuple[str, ...]  # the Ingress's own rule hosts, for `hosts=None`
    where: str  # the field it came from, for messages
    position: int  # order inside the Ingress, the last tie-breaker
    # The Secret's namespace when not the origin's (a Gateway's certificateRef
    # allowed by a ReferenceGrant).
    secret_namespace: str = ""

    @property
    def namespace(self) -> str:
        """The Secret's namespace."""
        return self.secret_namespace or self.origin.namespace

    @property
    def secret_name(self) -> str:
        """The SDS name of its certificate: "namespace/secretName"."""
        return f"{self.namespace}/{self.secret}"


def tls_requests(ingress: KubeObject, *, findings: Findings) -> list[TlsRequest]:
    spec = fields.mapping(ingress.body.get("spec"))
    entries = spec.get("tls")
    if entries is None:
        return []
    if fields.items(entries) is not entries:
        findings.rejected(ingress, reason="InvalidTLS", message="spec.tls is not a list")
        return []
    rule_hosts = _rule_hosts(spec)
    requests = []
    for index, entry in enumerate(fields.items(entries)):
        request = _request(ingress, entry, position=index, rule_hosts=rule_hosts, findings=findings)
        if request is not None:
            requests.append(request)
    return requests


def _request(
    ingress: KubeObject,
    entry: object,
    *,
    position: int,
    rule_hosts: tuple[str, ...],
    findings: Findings,
) -> TlsRequest | None:
    where = f"spec.tls[{position}]"
    if not isinstance(entry, Mapping):
        findings.rejected(ingress, reason="InvalidTLS", message=f"{where} is not a mapping")
        return None
    secret = fields.text(entry.get("secretName"))
    if not secret:
        # Without a Secret, other controllers serve their default
        # certificate; there is none here, so nothing is served over TLS.
        findings.rejected(ingress, reason="InvalidTLS", message=f"{where} has no secretName")
        return None
    raw_hosts = entry.get("hosts")
    hosts: tuple[str, ...] | None = None
    if raw_hosts is not None:
        if fields.items(raw_hosts) is not raw_hosts:
            message = f"{where}.hosts is not a list"
            findings.rejected(ingress, reason="InvalidTLS", message=message)
            return None
        valid = []
        for index, host in enumerate(fields.items(raw_hosts)):
            invalid = check_host(host) if isinstance(host, str) else None
            if not isinstance(host, str) or invalid is not None:
                detail = invalid.message if invalid is not None else "is not a string"
                message = f"{where}.hosts[{index}]: {detail}"
                findings.rejected(ingress, reason="InvalidHost", message=message)
                continue
            valid.append(host)
        hosts = tuple(dict.fromkeys(valid))
    return TlsRequest(
        origin=ingress,
        secret=secret,
        hosts=hosts,
        rule_hosts=rule_hosts,
        where=where,
        position=position,
    )


def _rule_hosts(spec: Mapping[str, object]) -> tuple[str, ...]:
    hosts = []
    for rule in fields.items(spec.get("rules")):
        host = fields.text(fields.mapping(rule).get("host"))
        if host and check_host(host) is None:
            hosts.append(host)
    return tuple(dict.fromkeys(hosts))
