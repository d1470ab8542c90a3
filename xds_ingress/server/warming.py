"""Make before break, per stream: no route reaches Envoy before its cluster is warm.

A cluster new to Envoy is not usable when its CDS response lands: Envoy
puts it in warming, subscribes to its ClusterLoadAssignment, and only adds
it once that arrives. A route that names it meanwhile answers 503
(`no_cluster`). The ADS order alone (CDS, EDS, ..., LDS, RDS in one burst)
does not prevent that, since EDS for a new cluster can only follow Envoy's
subscription to it. So while a snapshot brings clusters this Envoy has not
ACKed together with their assignments, every type that may name a cluster
(anything but CDS, EDS and the SDS secrets clusters need to warm) is held
back, and released once both ACKs are in.

The reverse, a cluster the snapshot no longer has, is kept in CDS (and its
assignment in EDS) until the held types of that snapshot are sent and ACKed,
so no accepted route names a cluster Envoy has already dropped. See the xDS
protocol, "Eventual consistency considerations" (make before break).

Neither wait may become a deadlock: a cluster Envoy rejects (a CDS or EDS
NACK) or does not warm within `bound` seconds is given up on, logged, and the
held types go out anyway.

The gate only sees names: a cluster's ClusterLoadAssignment is assumed to
bear the cluster's own name (resources/cluster.py sets service_name so).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Set
from dataclasses import dataclass, replace

from xds_ingress.cache import Snapshot
from xds_ingress.resources import types

log = logging.getLogger(__name__)

# What a cluster needs to warm; every other type may name a cluster.
WARMING_TYPES = frozenset({types.CLUSTER, types.ENDPOINT, types.SECRET})

# How long routes wait for a cluster to warm before they are sent anyway.
DEFAULT_BOUND_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Plan:
    """What one pass over a snapshot must not send."""

    # Types left unsent in this pass (routes waiting for clusters).
    hold: frozenset[str] = frozenset()
    # Cluster (and assignment) names kept in CDS and EDS though the snapshot
    # dropped them, until no route can still name them.
    linger: frozenset[str] = frozenset()


OPEN = Plan()


@dataclass(frozen=True, slots=True)
class Holdings:
    """What a stream has told and heard from its Envoy, as the gate needs it."""

    # Types the Envoy asked for on this stream.
    asked: Set[str]
    # Types the Envoy has ACKed at least once on this stream.
    answered: Set[str]
    # Names per type the Envoy has ACKed.
    acked: Callable[[str], Set[str]]
    # Cluster names this stream sent last (what the Envoy holds or is given).
    sent_clusters: Set[str]
    # Cluster names this stream sends of the snapshot (its CDS scope).
    clusters_in_scope: Callable[[Snapshot], Set[str]]
    # Per type, a count that changes whenever the names sent, acked or
    # subscribed to may have: equal counts, equal name sets.
    generation: Callable[[str], int]


@dataclass(frozen=True, slots=True)
class _Memo:
    """The gate's set arithmetic of the last pass, and what it depended on.

    Every stream plans on every publish and every ACK; at 10k clusters the
    set operations over every name cost a millisecond a pass. An endpoint
    change alters neither the clusters nor the names anyone holds, so the
    next pass reuses these, patched for the assignments that changed.
    """

    clusters: str  # the CDS TypeSnapshot's version
    endpoints: str | None  # the EDS TypeSnapshot's version; None: EDS not asked
    generations: tuple[int, int]  # held.generation of CDS and EDS
    pending: frozenset[str]
    linger: frozenset[str]


class WarmingGate:
    """Per-stream bookkeeping of clusters warming and clusters on their way out."""

    def __init__(self, *, node: Callable[[], str], bound: float = DEFAULT_BOUND_SECONDS) -> None:
        self._node = node
        self._bound = bound
        # Cluster name -> time.monotonic() it was first seen not warm.
        self._pending_since: dict[str, float] = {}
        # Clusters whose warming is no longer waited for (NACKed, timed out).
        self._given_up: set[str] = set()
        # The snapshot version whose held types the Envoy has ACKed.
        self._settled: str | None = None
        self._memo: _Memo | None = None

    def plan(self, snapshot: Snapshot, version: str, held: Holdings, now: float) -> Plan:
        if types.CLUSTER not in held.answered:
            # Clusters come over another stream (or not at all): nothing to
            # order. Or the first CDS response is not ACKed yet: Envoy asks
            # for listeners only once its first clusters have warmed, and a
            # client that never ACKs must not have its routes held for it.
            return OPEN
        dependent = {url for url in held.asked if url not in WARMING_TYPES}
        if not dependent:
            self._pending_since.clear()
            return OPEN
        in_scope = held.clusters_in_scope(snapshot)
        memo = self._remember(snapshot, in_scope, held)
        linger = memo.linger if self._settled != version else frozenset()
        pending = memo.pending
        for name in [n for n in self._pending_since if n not in pending]:
            del self._pending_since[name]
        # Given up only while it stays cold: warm or gone, it starts afresh.
        self._given_up.intersection_update(pending)
        if not pending:
            return Plan(linger=linger)
        for name in pending:
            self._pending_since.setdefault(name, now)
        late = sorted(n for n in pending if now - self._pending_since[n] >= self._bound)
        if late:
            log.warning(
                "envoy %r did not warm cluster(s) %s within %.1fs; routes sent anyway",
                self._node(),
                ", ".join(late),
                self._bound,
            )
            self._given_up.update(late)
        waiting = pending - self._given_up
        if not waiting:
            return Plan(linger=linger)
        log.debug(
            "envoy %r: holding %s until cluster(s) %s warm",
            self._node(),
            ", ".join(sorted(dependent)),
            ", ".join(sorted(waiting)),
        )
        return Plan(hold=frozenset(dependent), linger=linger)

    def _remember(self, snapshot: Snapshot, in_scope: Set[str], held: Holdings) -> _Memo:
        """Pending and lingering clusters, from the last pass's when they still hold."""
        clusters = snapshot.of_type(types.CLUSTER).version
        endpoints = snapshot.of_type(types.ENDPOINT) if types.ENDPOINT in held.asked else None
        generations = (held.generation(types.CLUSTER), held.generation(types.ENDPOINT))
        memo = self._memo
        if (
            memo is not None
            and memo.clusters == clusters
            and memo.generations == generations
            and (memo.endpoints is None) == (endpoints is None)
        ):
            if endpoints is None or memo.endpoints == endpoints.version:
                return memo
            assert memo.endpoints is not None
            names = endpoints.changed_since(memo.endpoints)
            if names is not None:
                # Same clusters, scope and names held: only these
                # assignments may have come or gone.
                pending = set(memo.pending)
                acked_clusters = held.acked(types.CLUSTER)
                acked_endpoints = held.acked(types.ENDPOINT)
                for name in names:
                    if name in in_scope and (
                        name not in acked_clusters
                        or (name in endpoints.resources and name not in acked_endpoints)
                    ):
                        pending.add(name)
                    else:
                        pending.discard(name)
                self._memo = replace(memo, endpoints=endpoints.version, pending=frozenset(pending))
                return self._memo
        self._memo = _Memo(
            clusters=clusters,
            endpoints=endpoints.version if endpoints is not None else None,
            generations=generations,
            pending=self._pending(snapshot, in_scope, held),
            linger=frozenset(held.sent_clusters - in_scope),
        )
        return self._memo

    @staticmethod
    def _pending(snapshot: Snapshot, in_scope: Set[str], held: Holdings) -> frozenset[str]:
        """Clusters of the snapshot this Envoy has not ACKed with their assignments."""
        # Set operations on key views run in C: every stream computes this
        # on every publish, over every cluster.
        not_acked = in_scope - held.acked(types.CLUSTER)
        if types.ENDPOINT in held.asked:
            assigned = snapshot.of_type(types.ENDPOINT).resources.keys() & in_scope
            not_acked |= assigned - held.acked(types.ENDPOINT)
        return frozenset(not_acked)

    def next_deadline(self) -> float | None:
        """When the oldest cluster still waited for times out (time.monotonic())."""
        waited = [t for n, t in self._pending_since.items() if n not in self._given_up]
        return min(waited) + self._bound if waited else None

    def rejected(self, type_url: str, names: Collection[str]) -> None:
        """Envoy NACKed `names` of CDS or EDS: those clusters may never warm."""
        if type_url not in (types.CLUSTER, types.ENDPOINT):
            return
        waiting = sorted(n for n in names if n in self._pending_since and n not in self._given_up)
        if waiting:
            log.warning(
                "envoy %r rejected %s while cluster(s) %s warmed; routes sent anyway",
                self._node(),
                type_url,
                ", ".join(waiting),
            )
            self._given_up.update(waiting)

    def after_pass(
        self,
        *,
        version: str,
        plan: Plan,
        held: Holdings,
        sent: Set[str],
        awaiting: Callable[[str], bool],
    ) -> bool:
        """Note whether the held types are ACKed at `version`; True: pass again now.

        Another pass is due when lingering clusters can go: everything that
        may name them is up to date and ACKed.
        """
        if plan.hold:
            return False
        dependent = [url for url in held.asked if url not in WARMING_TYPES]
        if any(url in sent or awaiting(url) for url in dependent):
            return False
        self._settled = version
        return bool(plan.linger)
