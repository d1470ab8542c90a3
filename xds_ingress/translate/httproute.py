"""One HTTPRoute's spec as matches, backends and header changes, before attaching.

Path matches: Exact and PathPrefix (whole path elements, as Kubernetes'
Prefix: "/foo" matches "/foo/bar", not "/foobar") and RegularExpression
(RE2, checked before Envoy sees it). A method match is a match on the
":method" pseudo-header; header matches are shared with GRPCRoute. Query
parameter matches and filters other than RequestHeaderModifier are refused
with a condition rather than dropped: serving a rule without a condition
the user wrote would send it requests they meant for another.

Each part a user got wrong is rejected here with a condition naming where
it is (e.g. `spec.rules[1].matches[0].path`); the rest of the route is still
served.
"""

from __future__ import annotations

from dataclasses import dataclass

from xds_ingress import ir
from xds_ingress.sources.objects import KubeObject
from xds_ingress.translate import fields
from xds_ingress.translate.findings import Findings
from xds_ingress.translate.grpcroute import GrpcBackendRef, header_match, rule_parts
from xds_ingress.translate.re2 import check_re2
from xds_ingress.translate.validation import Invalid, path_match

METHOD_HEADER = ":method"
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
# The Gateway API's path types → the Ingress spelling validation.path_match reads.
_PATH_TYPES = {"Exact": "Exact", "PathPrefix": "Prefix"}


class PathRank:
    """How a path match ranks: exact paths, then regexes, then prefixes (longest first)."""

    EXACT = 0
    REGEX = 1
    PREFIX = 2


_PATH_RANK = {
    ir.PathMatchType.EXACT: PathRank.EXACT,
    ir.PathMatchType.REGEX: PathRank.REGEX,
    ir.PathMatchType.PREFIX: PathRank.PREFIX,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpMatch:
    path: ir.PathMatch
    headers: tuple[ir.HeaderMatch, ...]  # the method match among them, as ":method"
    method: bool  # whether a method is matched

    def rank(self) -> tuple[object, ...]:
        """The Gateway API's HTTPRoute precedence, most specific first."""
        header_count = len(self.headers) - self.method
        return (
            _PATH_RANK[self.path.type],
            -len(self.path.value),
            not self.method,
            -header_count,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpRule:
    matches: tuple[HttpMatch, ...]
    backends: tuple[GrpcBackendRef, ...]
    request_headers: ir.HeaderMutation | None
    where: str
    position: int


_MATCH_ALL = HttpMatch(
    path=ir.PathMatch(type=ir.PathMatchType.PREFIX, value="/"), headers=(), method=False
)


def http_rules(route: KubeObject, *, findings: Findings) -> list[HttpRule]:
    rules = []
    for index, raw in enumerate(fields.items(fields.mapping(route.body.get("spec")).get("rules"))):
        where = f"spec.rules[{index}]"
        rule = _rule(route, raw, where=where, position=index, findings=findings)
        if rule is not None:
            rules.append(rule)
    return rules


def _rule(
    route: KubeObject, rule: object, *, where: str, position: int, findings: Findings
) -> HttpRule | None:
    parts = rule_parts(route, rule, where=where, parse_match=_match, findings=findings)
    if parts is None:
        return None
    return HttpRule(
        matches=parts.matches or (_MATCH_ALL,),
        backends=parts.backends,
        request_headers=parts.request_headers,
        where=where,
        position=position,
    )


def _match(match: object, *, where: str) -> HttpMatch | Invalid:
    match = fields.mapping(match)
    if fields.items(match.get("queryParams")):
        return _unsupported(f"{where}.queryParams: query parameter matches are not supported yet")
    path = _path(match.get("path"), where=f"{where}.path")
    if isinstance(path, Invalid):
        return path
    headers = []
    for index, raw in enumerate(fields.items(match.get("headers"))):
        header = header_match(raw, where=f"{where}.headers[{index}]")
        if isinstance(header, Invalid):
            return header
        headers.append(header)
    method = match.get("method")
    if method is not None:
        if method not in _METHODS:
            return _unsupported(f"{where}.method {method!r} is not an HTTP method")
        headers.append(ir.HeaderMatch(name=METHOD_HEADER, value=str(method)))
    return HttpMatch(path=path, headers=tuple(sorted(headers)), method=method is not None)


def _path(raw: object, *, where: str) -> ir.PathMatch | Invalid:
    if raw is None:
        return _MATCH_ALL.path
    path = fields.mapping(raw)
    match_type = path.get("type", "PathPrefix")
    value = path.get("value", "/")
    if match_type == "RegularExpression":
        if not isinstance(value, str) or not value:
            return _unsupported(f"{where}.value must be a non-empty string")
        invalid = check_re2(value)
        if invalid is not None:
            return Invalid(reason=invalid.reason, message=f"{where}.value: {invalid.message}")
        return ir.PathMatch(type=ir.PathMatchType.REGEX, value=value)
    spelled = _PATH_TYPES.get(match_type) if isinstance(match_type, str) else None
    if spelled is None:
        return _unsupported(
            f"{where}.type {match_type!r} is not Exact, PathPrefix or RegularExpression"
        )
    found = path_match(value, spelled)
    if isinstance(found, Invalid):
        return _unsupported(f"{where}: {found.message}")
    return found


def _unsupported(message: str) -> Invalid:
    return Invalid(reason="UnsupportedValue", message=message)
