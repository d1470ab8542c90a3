"""Merging Ingresses: who wins a contested route, and the order routes match in.

Envoy takes the first route that matches, so the order written here is the
precedence Kubernetes specifies: Exact before Prefix, then longer paths
before shorter. When two Ingresses ask for the same host, path and path
type, the older one (creationTimestamp, then namespace/name) keeps it, as in
other ingress controllers, so that a new Ingress cannot hijack live traffic.

A named host belongs to one namespace: the one whose oldest Ingress asked
for it first. Ingresses of that namespace share the host path by path; an
Ingress of another namespace gets none of its paths, so that a tenant
cannot add "/admin" to another tenant's host. The catch-all host (rules
without a host, defaultBackend) belongs to no namespace.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from xds_ingress import ir
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


def resolve_conflicts(candidates: Iterable[Candidate], *, findings: Findings) -> list[Candidate]:
    """One candidate per (host, path type, path); each loser gets a condition."""
    groups: dict[tuple[str, ir.PathMatchType, str], list[Candidate]] = defaultdict(list)
    for candidate in _owned_hosts(list(candidates), findings=findings):
        groups[candidate.host, candidate.path.type, candidate.path.value].append(candidate)
    winners: list[Candidate] = []
    for group in groups.values():
        # A rule beats a defaultBackend: the default is only for what no rule matches.
        ranked = sorted(group, key=lambda c: (c.default_backend, c.age, c.position))
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


def _owned_hosts(candidates: list[Candidate], *, findings: Findings) -> list[Candidate]:
    """The candidates of each named host's owning namespace; the others are told why."""
    owners: dict[str, Candidate] = {}
    for candidate in candidates:
        if candidate.host == CATCH_ALL_HOST:
            continue
        held = owners.get(candidate.host)
        if held is None or candidate.age < held.age:
            owners[candidate.host] = candidate
    routes_of_owners = {
        (c.host, c.path.type, c.path.value): c
        for c in candidates
        if c.host in owners and c.origin.namespace == owners[c.host].origin.namespace
    }
    kept = []
    for candidate in candidates:
        owner = owners.get(candidate.host)
        if owner is None or owner.origin.namespace == candidate.origin.namespace:
            kept.append(candidate)
            continue
        same_route = routes_of_owners.get(
            (candidate.host, candidate.path.type, candidate.path.value)
        )
        if same_route is not None:
            # The very same path: say so, as for two Ingresses of one namespace.
            _lost(candidate, same_route, findings=findings)
            continue
        findings.rejected(
            candidate.origin,
            reason="HostConflict",
            message=(
                f"{candidate.where}: host {candidate.host} belongs to namespace "
                f"{owner.origin.namespace}, where {owner.origin.key} claimed it first; "
                "only Ingresses of that namespace may route its paths"
            ),
        )
    return kept


def route_order(candidate: Candidate) -> tuple[object, ...]:
    path = candidate.path
    return (
        candidate.default_backend,
        path.type is not ir.PathMatchType.EXACT,
        -len(path.value),
        path.value,
        _TYPE_RANK[path.type],
        candidate.age,
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
