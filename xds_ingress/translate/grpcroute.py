"""One GRPCRoute's spec as matches, backends and header changes, before attaching.

A gRPC call is an HTTP/2 POST to /package.Service/Method, so a method match
is a path match: Exact service and method → that exact path; service only →
the prefix /service/; method only → the regex /[^/]+/method; a
RegularExpression match → one regex over the path built from both parts.
Each part a user got wrong is rejected here with a condition naming where
it is (e.g. `spec.rules[1].matches[0].method`); the rest of the route is
still served.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from xds_ingress import ir
from xds_ingress.sources.objects import SERVICE, KubeObject
from xds_ingress.translate import fields
from xds_ingress.translate.findings import Findings
from xds_ingress.translate.re2 import check_re2
from xds_ingress.translate.rules import ServiceRef
from xds_ingress.translate.validation import Invalid, check_host

# The Gateway API's own validation patterns for Exact method matches.
_SERVICE = re.compile(r"[A-Za-z_][A-Za-z_0-9]*(?:\.[A-Za-z_][A-Za-z_0-9]*)*")
_METHOD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
# An HTTP header name (RFC 7230 token), as the Gateway API restricts it.
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`|~]+")
_ANY_PART = "[^/]+"
# Envoy refuses to change these with request_headers_to_add/remove.
_PROTECTED_HEADERS = frozenset({"host"})
MAX_WEIGHT = 1_000_000
MatchT = TypeVar("MatchT")


class MatchKind:
    """How a match ranks: exact methods before regexes, both before "any method"."""

    EXACT = 0
    REGEX = 1
    ANY = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class GrpcMatch:
    path: ir.PathMatch
    headers: tuple[ir.HeaderMatch, ...]
    kind: int  # a MatchKind
    service: str  # as written, for precedence (longer first)
    method: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GrpcBackendRef:
    ref: ServiceRef | Invalid
    weight: int
    where: str


@dataclass(frozen=True, slots=True, kw_only=True)
class GrpcRule:
    matches: tuple[GrpcMatch, ...]
    backends: tuple[GrpcBackendRef, ...]
    request_headers: ir.HeaderMutation | None
    where: str
    position: int


_MATCH_ALL = GrpcMatch(
    path=ir.PathMatch(type=ir.PathMatchType.STRING_PREFIX, value="/"),
    headers=(),
    kind=MatchKind.ANY,
    service="",
    method="",
)


def route_hostnames(route: KubeObject) -> tuple[tuple[str, ...] | None, list[Invalid]]:
    """spec.hostnames, and what is wrong with the ones left out.

    () means any host; None that every hostname given was invalid. The
    problems are the caller's to report, once it knows the route is ours.
    """
    raw = fields.items(fields.mapping(route.body.get("spec")).get("hostnames"))
    valid = []
    problems = []
    for index, hostname in enumerate(raw):
        if not isinstance(hostname, str):
            invalid: Invalid | None = Invalid(
                reason="UnsupportedValue", message=f"spec.hostnames[{index}] is not a string"
            )
        else:
            invalid = check_host(hostname)
        if invalid is None and isinstance(hostname, str):
            valid.append(hostname)
        elif invalid is not None:
            problems.append(
                Invalid(
                    reason="UnsupportedValue", message=f"spec.hostnames[{index}]: {invalid.message}"
                )
            )
    if raw and not valid:
        return None, problems
    return tuple(valid), problems


def grpc_rules(route: KubeObject, *, findings: Findings) -> list[GrpcRule]:
    rules = []
    for index, raw in enumerate(fields.items(fields.mapping(route.body.get("spec")).get("rules"))):
        where = f"spec.rules[{index}]"
        rule = _rule(route, fields.mapping(raw), where=where, position=index, findings=findings)
        if rule is not None:
            rules.append(rule)
    return rules


def _rule(
    route: KubeObject, rule: object, *, where: str, position: int, findings: Findings
) -> GrpcRule | None:
    parts = rule_parts(route, rule, where=where, parse_match=_match, findings=findings)
    if parts is None:
        return None
    return GrpcRule(
        matches=parts.matches or (_MATCH_ALL,),
        backends=parts.backends,
        request_headers=parts.request_headers,
        where=where,
        position=position,
    )


@dataclass(frozen=True, slots=True)
class RuleParts(Generic[MatchT]):
    """What GRPCRoute and HTTPRoute rules share: matches (empty: none given), backends, filters."""

    matches: tuple[MatchT, ...]
    backends: tuple[GrpcBackendRef, ...]
    request_headers: ir.HeaderMutation | None


def rule_parts(
    route: KubeObject,
    rule: object,
    *,
    where: str,
    parse_match: Callable[..., MatchT | Invalid],
    findings: Findings,
) -> RuleParts[MatchT] | None:
    """A rule's parts, each bad match reported; None: the rule cannot be served.

    `parse_match(raw, where=...)` reads one entry of the rule's matches.
    """
    rule = fields.mapping(rule)
    request_headers = rule_filters(rule.get("filters"), where=where)
    if isinstance(request_headers, Invalid):
        # Serving the rule without a filter the user asked for (a redirect,
        # a header the backend authorises on) would be worse than not at all.
        findings.rejected(route, reason=request_headers.reason, message=request_headers.message)
        return None
    raw_matches = fields.items(rule.get("matches"))
    matches = []
    for index, raw in enumerate(raw_matches):
        match = parse_match(fields.mapping(raw), where=f"{where}.matches[{index}]")
        if isinstance(match, Invalid):
            findings.rejected(route, reason=match.reason, message=match.message)
        else:
            matches.append(match)
    if raw_matches and not matches:
        return None
    backends = tuple(
        backend_ref(route, fields.mapping(raw), where=f"{where}.backendRefs[{index}]")
        for index, raw in enumerate(fields.items(rule.get("backendRefs")))
    )
    return RuleParts(matches=tuple(matches), backends=backends, request_headers=request_headers)


def _match(match: object, *, where: str) -> GrpcMatch | Invalid:
    match = fields.mapping(match)
    headers = []
    for index, raw in enumerate(fields.items(match.get("headers"))):
        header = header_match(fields.mapping(raw), where=f"{where}.headers[{index}]")
        if isinstance(header, Invalid):
            return header
        headers.append(header)
    method = match.get("method")
    if method is None:
        return GrpcMatch(
            path=_MATCH_ALL.path,
            headers=tuple(headers),
            kind=MatchKind.ANY,
            service="",
            method="",
        )
    found = _method_match(fields.mapping(method), where=f"{where}.method")
    if isinstance(found, Invalid):
        return found
    path, kind, service, name = found
    return GrpcMatch(path=path, headers=tuple(headers), kind=kind, service=service, method=name)


def _method_match(method: object, *, where: str) -> tuple[ir.PathMatch, int, str, str] | Invalid:
    method = fields.mapping(method)
    match_type = method.get("type", "Exact")
    service = method.get("service") or ""
    name = method.get("method") or ""
    if not isinstance(service, str) or not isinstance(name, str):
        return _unsupported(f"{where}: service and method must be strings")
    if not service and not name:
        return _unsupported(f"{where}: give a service, a method or both")
    if match_type == "Exact":
        if service and not _SERVICE.fullmatch(service):
            return _unsupported(f"{where}.service {service!r} is not a gRPC service name")
        if name and not _METHOD.fullmatch(name):
            return _unsupported(f"{where}.method {name!r} is not a gRPC method name")
        if service and name:
            path = ir.PathMatch(type=ir.PathMatchType.EXACT, value=f"/{service}/{name}")
        elif service:
            path = ir.PathMatch(type=ir.PathMatchType.STRING_PREFIX, value=f"/{service}/")
        else:
            path = ir.PathMatch(type=ir.PathMatchType.REGEX, value=f"/{_ANY_PART}/{name}")
        return path, MatchKind.EXACT, service, name
    if match_type == "RegularExpression":
        for part, value in (("service", service), ("method", name)):
            invalid = check_re2(value) if value else None
            if invalid is not None:
                return Invalid(reason=invalid.reason, message=f"{where}.{part}: {invalid.message}")
        # Each part is grouped, so an alternation in one cannot swallow the "/".
        regex = f"/(?:{service or _ANY_PART})/(?:{name or _ANY_PART})"
        # Each part may fit Envoy's RE2 program size limit and the two not.
        invalid = check_re2(regex)
        if invalid is not None:
            return Invalid(reason=invalid.reason, message=f"{where}: {invalid.message}")
        return (
            ir.PathMatch(type=ir.PathMatchType.REGEX, value=regex),
            MatchKind.REGEX,
            service,
            name,
        )
    return _unsupported(f"{where}.type {match_type!r} is not Exact or RegularExpression")


def header_match(header: object, *, where: str) -> ir.HeaderMatch | Invalid:
    """A Gateway API header match (GRPCRoute and HTTPRoute share its rules)."""
    header = fields.mapping(header)
    name = fields.text(header.get("name"))
    value = fields.text(header.get("value"))
    match_type = header.get("type", "Exact")
    if not name or not _HEADER_NAME.fullmatch(name):
        return _unsupported(f"{where}.name {header.get('name')!r} is not a header name")
    if value is None:
        return _unsupported(f"{where}.value must be a string")
    if match_type == "Exact":
        return ir.HeaderMatch(name=name.lower(), value=value)
    if match_type == "RegularExpression":
        invalid = check_re2(value)
        if invalid is not None:
            return Invalid(reason=invalid.reason, message=f"{where}.value: {invalid.message}")
        return ir.HeaderMatch(name=name.lower(), value=value, regex=True)
    return _unsupported(f"{where}.type {match_type!r} is not Exact or RegularExpression")


def rule_filters(raw: object, *, where: str) -> ir.HeaderMutation | Invalid | None:
    """A rule's filters: RequestHeaderModifier is served; any other filter is Invalid."""
    mutation = None
    for index, entry in enumerate(fields.items(raw)):
        entry = fields.mapping(entry)
        here = f"{where}.filters[{index}]"
        filter_type = entry.get("type")
        if filter_type != "RequestHeaderModifier":
            return _unsupported(f"{here}: filter type {filter_type!r} is not supported yet")
        if mutation is not None:
            return _unsupported(f"{here}: only one RequestHeaderModifier per rule")
        found = _header_modifier(fields.mapping(entry.get("requestHeaderModifier")), where=here)
        if isinstance(found, Invalid):
            return found
        mutation = found
    return mutation


def _header_modifier(modifier: object, *, where: str) -> ir.HeaderMutation | Invalid:
    modifier = fields.mapping(modifier)
    changes: dict[str, list[tuple[str, str]]] = {"set": [], "add": []}
    for key, found in changes.items():
        for index, raw in enumerate(fields.items(modifier.get(key))):
            entry = fields.mapping(raw)
            name = _modifiable(entry.get("name"))
            value = fields.text(entry.get("value"))
            if name is None or value is None:
                return _unsupported(
                    f"{where}.requestHeaderModifier.{key}[{index}] needs a header name "
                    "(not Host) and a string value"
                )
            found.append((name, value))
    removed = []
    for index, raw in enumerate(fields.items(modifier.get("remove"))):
        name = _modifiable(raw)
        if name is None:
            message = f"{where}.requestHeaderModifier.remove[{index}] is not a header name"
            return _unsupported(message)
        removed.append(name)
    return ir.HeaderMutation(
        set=tuple(changes["set"]), add=tuple(changes["add"]), remove=tuple(removed)
    )


def _modifiable(name: object) -> str | None:
    if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
        return None
    lowered = name.lower()
    return None if lowered in _PROTECTED_HEADERS else lowered


def backend_ref(route: KubeObject, ref: object, *, where: str) -> GrpcBackendRef:
    """One backendRef of a GRPCRoute or HTTPRoute rule, checked but not resolved."""
    ref = fields.mapping(ref)
    weight = ref.get("weight", 1)
    checked_weight = fields.integer(weight)
    if checked_weight is None or not 0 <= checked_weight <= MAX_WEIGHT:
        message = f"{where}: weight {weight!r} is not an integer in 0-{MAX_WEIGHT}"
        return GrpcBackendRef(
            ref=Invalid(reason="UnsupportedValue", message=message), weight=0, where=where
        )
    group = fields.text(ref.get("group")) or ""
    kind = fields.text(ref.get("kind")) or SERVICE
    if group or kind != SERVICE:
        message = f"{where}: only Services can be backends, not {kind} ({group or 'core'})"
        return GrpcBackendRef(
            ref=Invalid(reason="InvalidKind", message=message), weight=checked_weight, where=where
        )
    name = fields.text(ref.get("name"))
    port = fields.port_number(ref.get("port"))
    if not name or port is None:
        message = f"{where}: a Service backend needs a name and a port (1-65535)"
        return GrpcBackendRef(
            ref=Invalid(reason="UnsupportedValue", message=message),
            weight=checked_weight,
            where=where,
        )
    namespace = fields.text(ref.get("namespace")) or route.namespace
    return GrpcBackendRef(
        ref=ServiceRef(namespace=namespace, name=name, port=port),
        weight=checked_weight,
        where=where,
    )


def _unsupported(message: str) -> Invalid:
    return Invalid(reason="UnsupportedValue", message=message)
