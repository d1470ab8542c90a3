"""Merging Ingresses: who wins a contested route, and the order routes match in.

Envoy takes the first route that matches, so the order written here is the
precedence Kubernetes specifies: Exact before Prefix, then longer paths
before shorter. When two Ingresses ask for the same host, path and path
type, the older one (creationTimestamp, then namespace/name) keeps it, as in
other ingress controllers, so that a new Ingress cannot hijack live traffic.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime

from xds_ingress import ir
from xds_ingress.sources.objects import KubeObject
from xds_ingress.translate import fields
from xds_ingress.translate.findings import Findings
from xds_ingress.translate.rules import CATCH_ALL_HOST, Candidate

# For equal paths, the more specific match first.
_TYPE_RANK = {
    ir.PathMatchType.EXACT: 0,
    ir.PathMatchType.PREFIX: 1,
    ir.PathMatchType.STRING_PREFIX: 2,
}

_EVERYTHING = ir.PathMatch(type=ir.PathMatchType.STRING_PREFIX, value="/")
# How users wrote each type in the Ingress, for messages.
_TYPE_NAME = {
    ir.PathMatchType.EXACT: "Exact",
    ir.PathMatchType.PREFIX: "Prefix",
    ir.PathMatchType.STRING_PREFIX: "ImplementationSpecific",
}

AgeKey = tuple[bool, float, str, str]


def age(obj: KubeObject) -> AgeKey:
    """Oldest first; objects without a readable creationTimestamp after all others."""
    stamp = fields.text(obj.metadata.get("creationTimestamp"))
    try:
        created = datetime.fromisoformat(stamp) if stamp else None
    except ValueError:
        created = None
    if created is None:
        return (True, 0.0, obj.namespace, obj.name)
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return (False, created.timestamp(), obj.namespace, obj.name)


def resolve_conflicts(candidates: Iterable[Candidate], *, findings: Findings) -> list[Candidate]:
    """One candidate per (host, path type, path); each loser gets a condition."""
    groups: dict[tuple[str, ir.PathMatchType, str], list[Candidate]] = defaultdict(list)
    for candidate in candidates:
        groups[candidate.host, candidate.path.type, candidate.path.value].append(candidate)
    winners: list[Candidate] = []
    for group in groups.values():
        # A rule beats a defaultBackend: the default is only for what no rule matches.
        ranked = sorted(group, key=lambda c: (c.default_backend, age(c.origin), c.position))
        winners.append(ranked[0])
        for loser in ranked[1:]:
            _lost(loser, ranked[0], findings=findings)
    # An ImplementationSpecific "/" rule already takes every request a
    # defaultBackend would.
    covering = {c.host: c for c in winners if c.path == _EVERYTHING}
    kept = []
    for candidate in winners:
        if candidate.default_backend and candidate.host in covering:
            _lost(candidate, covering[candidate.host], findings=findings)
        else:
            kept.append(candidate)
    return kept


def route_order(candidate: Candidate) -> tuple[object, ...]:
    path = candidate.path
    return (
        candidate.default_backend,
        path.type is not ir.PathMatchType.EXACT,
        -len(path.value),
        path.value,
        _TYPE_RANK[path.type],
        age(candidate.origin),
        candidate.position,
    )


def host_order(host: str) -> tuple[bool, str]:
    return (host == CATCH_ALL_HOST, host)


def _lost(loser: Candidate, winner: Candidate, *, findings: Findings) -> None:
    same_ingress = loser.origin.key == winner.origin.key
    if loser.default_backend and same_ingress:
        return  # the Ingress's own rule covers its default: nothing is lost
    by = f"{winner.where} of this Ingress" if same_ingress else str(winner.origin.key)
    findings.rejected(
        loser.origin,
        reason="PathConflict",
        message=(
            f"{loser.where}: host {loser.host} {_TYPE_NAME[loser.path.type]} path "
            f"{loser.path.value} is already routed by {by}"
        ),
    )
