"""One Ingress's rules as candidate routes, before Ingresses are merged.

Each rule a user got wrong is rejected here with a condition naming where it
is (e.g. `spec.rules[1].http.paths[0]`); the Ingress's other rules still
become candidates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from xds_ingress import ir
from xds_ingress.sources.objects import KubeObject
from xds_ingress.translate import fields
from xds_ingress.translate.age import AgeKey, age
from xds_ingress.translate.annotations import BackendOptions, backend_options
from xds_ingress.translate.findings import Findings
from xds_ingress.translate.validation import Invalid, check_host, path_match

CATCH_ALL_HOST = "*"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceRef:
    namespace: str
    name: str
    port: int | str  # spec.ports[].port, or spec.ports[].name
    # What the referring object's annotations ask of the cluster.
    options: BackendOptions = field(default_factory=BackendOptions)


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """A route one Ingress asks for; it may lose to another Ingress's."""

    host: str  # CATCH_ALL_HOST when the rule has none
    path: ir.PathMatch
    backend: ServiceRef | Invalid
    origin: KubeObject
    where: str  # the field it came from, for messages
    position: int  # order inside the Ingress, the last tie-breaker
    # age(origin), read once: contests and route order compare it often.
    age: AgeKey
    default_backend: bool = False


def ingress_candidates(ingress: KubeObject, *, findings: Findings) -> list[Candidate]:
    spec = ingress.body.get("spec") or {}
    if not isinstance(spec, Mapping):
        findings.rejected(ingress, reason="InvalidSpec", message="spec is not a mapping")
        return []
    candidates: list[Candidate] = []
    options = backend_options(ingress, findings=findings)
    rules = spec.get("rules") or ()
    if fields.items(rules) is not rules:
        findings.rejected(ingress, reason="InvalidSpec", message="spec.rules is not a list")
    for index, rule in enumerate(fields.items(rules)):
        candidates.extend(
            _rule_candidates(
                ingress,
                rule,
                where=f"spec.rules[{index}]",
                first=len(candidates),
                options=options,
                findings=findings,
            )
        )
    default = spec.get("defaultBackend")
    if default is not None:
        candidates.append(
            Candidate(
                host=CATCH_ALL_HOST,
                path=ir.PathMatch(type=ir.PathMatchType.PREFIX, value="/"),
                backend=_backend_ref(default, namespace=ingress.namespace, options=options),
                origin=ingress,
                where="spec.defaultBackend",
                position=len(candidates),
                age=age(ingress),
                default_backend=True,
            )
        )
    return candidates


def _rule_candidates(
    ingress: KubeObject,
    rule: object,
    *,
    where: str,
    first: int,
    options: BackendOptions,
    findings: Findings,
) -> list[Candidate]:
    if not isinstance(rule, Mapping):
        findings.rejected(ingress, reason="InvalidSpec", message=f"{where} is not a mapping")
        return []
    host = rule.get("host") or CATCH_ALL_HOST
    if not isinstance(host, str):
        findings.rejected(ingress, reason="InvalidHost", message=f"{where}.host is not a string")
        return []
    invalid = None if host == CATCH_ALL_HOST else check_host(host)
    if invalid is not None:
        findings.rejected(ingress, reason=invalid.reason, message=f"{where}: {invalid.message}")
        return []
    http = rule.get("http")
    if http is None:
        return []  # a host-only rule (e.g. just for TLS) routes nothing
    paths = http.get("paths") if isinstance(http, Mapping) else None
    if fields.items(paths) is not paths or not paths:
        message = f"{where}.http.paths must be a non-empty list"
        findings.rejected(ingress, reason="InvalidSpec", message=message)
        return []
    candidates: list[Candidate] = []
    created = age(ingress)
    for index, entry in enumerate(fields.items(paths)):
        entry_where = f"{where}.http.paths[{index}]"
        if not isinstance(entry, Mapping):
            message = f"{entry_where} is not a mapping"
            findings.rejected(ingress, reason="InvalidSpec", message=message)
            continue
        match = path_match(entry.get("path"), entry.get("pathType"))
        if isinstance(match, Invalid):
            message = f"{entry_where}: {match.message}"
            findings.rejected(ingress, reason=match.reason, message=message)
            continue
        candidates.append(
            Candidate(
                host=host,
                path=match,
                backend=_backend_ref(
                    entry.get("backend"), namespace=ingress.namespace, options=options
                ),
                origin=ingress,
                where=entry_where,
                position=first + len(candidates),
                age=created,
            )
        )
    return candidates


def _backend_ref(raw: object, *, namespace: str, options: BackendOptions) -> ServiceRef | Invalid:
    backend = fields.mapping(raw)
    if "resource" in backend and "service" not in backend:
        return Invalid(
            reason="UnsupportedBackend",
            message="resource backends are not supported; use a service backend",
        )
    service = fields.mapping(backend.get("service"))
    name = fields.text(service.get("name"))
    if not name:
        return Invalid(reason="InvalidBackend", message="backend has no service.name")
    port = fields.mapping(service.get("port"))
    if port.get("number") is not None:
        number = fields.port_number(port.get("number"))
        if number is None:
            message = f"service port number {port.get('number')!r} is not in 1-65535"
            return Invalid(reason="InvalidBackend", message=message)
        return ServiceRef(namespace=namespace, name=name, port=number, options=options)
    port_name = fields.text(port.get("name"))
    if not port_name:
        message = f"backend for Service {name} has neither service.port.number nor .name"
        return Invalid(reason="InvalidBackend", message=message)
    return ServiceRef(namespace=namespace, name=name, port=port_name, options=options)
