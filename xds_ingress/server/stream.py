"""The loop every xDS stream runs, whatever its variant.

A stream learns its node (and so its node group) from the first request,
watches that group's snapshots, and after each batch of events sends what
the Envoy lacks. The variants (state of the world, incremental) only decide
how a request changes the stream's state and which responses follow.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Set
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from xds_ingress.cache import Cancel, Snapshot, SnapshotWatcher
from xds_ingress.resources import types
from xds_ingress.server.events import Ended, StreamEvents, Woken
from xds_ingress.server.metrics import XdsMetrics
from xds_ingress.server.observer import Answer, NullObserver, Rejection, XdsObserver
from xds_ingress.server.redact import redact_text
from xds_ingress.server.registry import Nack, StreamStatus, one_line
from xds_ingress.server.warming import DEFAULT_BOUND_SECONDS, OPEN, Holdings, Plan, WarmingGate

log = logging.getLogger(__name__)

Request = TypeVar("Request")

# LDS and CDS are the types whose empty first request means "everything"
# (the legacy wildcard of the xDS protocol, "How the client specifies what
# resources to return").
WILDCARD_TYPES = frozenset({types.LISTENER, types.CLUSTER})

# Send times kept per type for responses not answered yet.
_SENT_TIMES_KEPT = 64


def in_ads_order(type_urls: Iterator[str] | list[str] | set[str]) -> list[str]:
    """CDS, EDS, SDS, LDS, RDS, then anything else.

    The xDS spec ("Eventual consistency considerations") asks for clusters
    before their endpoints and listeners before their routes, so Envoy never
    waits on a resource it was not yet told about.
    """
    return sorted(type_urls, key=_ads_rank)


_ADS_RANKS = {type_url: index for index, type_url in enumerate(types.ADS_ORDER)}


def _ads_rank(type_url: str) -> tuple[int, str]:
    return _ADS_RANKS.get(type_url, len(_ADS_RANKS)), type_url


@dataclass(frozen=True)
class StreamContext:
    """What every stream shares with the server."""

    cache: SnapshotWatcher
    metrics: XdsMetrics
    control_plane_id: str
    # Told every ACK and NACK, e.g. so a NACK becomes status on the objects
    # behind the rejected resources (app.py wires it; the server knows no more).
    observer: XdsObserver = field(default_factory=NullObserver)
    # How long routes wait for a new cluster to warm before they go anyway.
    warming_bound_seconds: float = DEFAULT_BOUND_SECONDS


class XdsStream(abc.ABC, Generic[Request]):
    def __init__(
        self, *, context: StreamContext, status: StreamStatus, fixed_type: str | None
    ) -> None:
        self._context = context
        self._status = status
        # Set on the per-type services (LDS, CDS, ...), where requests may
        # leave type_url empty.
        self._fixed_type = fixed_type
        self._group: str | None = None
        self._nonces = itertools.count(1)
        # Types this stream has asked for (the per-type streams gauge).
        self._asked: set[str] = set()
        # Types the Envoy has ACKed at least once (see warming).
        self._acked_once: set[str] = set()
        # type -> nonce -> time.monotonic() it was sent, for sent-to-ACK latency.
        self._sent_at: dict[str, dict[str, float]] = {}
        # type -> the snapshot version its last response came from: a new one
        # is a push caused by a change, whose change-to-sent latency counts.
        self._pushed_from: dict[str, str] = {}
        # Routes wait for their clusters to warm; dropped clusters wait for
        # the routes that named them (see warming).
        self._gate = WarmingGate(
            node=lambda: str(self._status.node_id), bound=context.warming_bound_seconds
        )

    @property
    def group(self) -> str | None:
        return self._group

    def _next_nonce(self) -> str:
        return str(next(self._nonces))

    def _learn_node(self, node: Any) -> None:
        if self._group is not None:
            return
        self._status.node_id = node.id
        self._status.node_cluster = node.cluster
        self._group = node.cluster
        log.info(
            "envoy %r (group %r) connected from %s over %s",
            node.id,
            node.cluster,
            self._status.peer,
            self._status.kind,
        )

    def _type_of(self, request_type_url: str) -> str | None:
        type_url = self._requested_type(request_type_url)
        if type_url is not None and type_url not in self._asked:
            self._asked.add(type_url)
            self._context.metrics.type_opened(type_url, self._status.kind)
        return type_url

    def _peek_type(self, request_type_url: str) -> str | None:
        """The type a request is about, quietly (`_requested_type` logs a mismatch)."""
        if self._fixed_type is not None:
            if request_type_url and request_type_url != self._fixed_type:
                return None
            return self._fixed_type
        return request_type_url or None

    def _requested_type(self, request_type_url: str) -> str | None:
        if self._fixed_type is not None:
            if request_type_url and request_type_url != self._fixed_type:
                log.warning(
                    "envoy %r asked for %s on the %s service; ignored",
                    self._status.node_id,
                    request_type_url,
                    self._fixed_type,
                )
                return None
            return self._fixed_type
        return request_type_url or None

    def _held(self, type_url: str) -> Iterable[str]:
        """Names this stream keeps on an older version after a NACK (see sotw)."""
        return ()

    def _sent(self, type_url: str, snapshot: Snapshot) -> None:
        """A response of `type_url` built from `snapshot` has been handed to gRPC."""
        now = time.monotonic()
        kind = self._status.kind
        status = self._status.of_type(type_url)
        status.sent_at = time.time()
        times = self._sent_at.setdefault(type_url, {})
        times[status.sent_nonce] = now
        # Envoy answers every response, but bound the bookkeeping anyway.
        while len(times) > _SENT_TIMES_KEPT:
            del times[next(iter(times))]
        previous = self._pushed_from.get(type_url)
        self._pushed_from[type_url] = snapshot.version
        # The first response of a type answers the Envoy's request, not a
        # change; a resend from the same snapshot (after a NACK) is no change.
        if previous is not None and previous != snapshot.version and snapshot.changed_at:
            self._context.metrics.observe_change_to_sent(
                type_url, kind, max(0.0, now - snapshot.changed_at)
            )

    def _awaiting(self, type_url: str) -> bool:
        """The last response of `type_url` is not answered yet."""
        return self._status.of_type(type_url).sent_nonce in self._sent_at.get(type_url, {})

    def _clusters_in_scope(self, snapshot: Snapshot) -> Set[str]:
        clusters = snapshot.of_type(types.CLUSTER).resources
        status = self._status.of_type(types.CLUSTER)
        if status.wildcard:
            return clusters.keys()
        return frozenset(name for name in status.subscribed if name in clusters)

    def _holdings(self) -> Holdings:
        return Holdings(
            asked=self._asked,
            answered=self._acked_once,
            acked=lambda type_url: self._status.of_type(type_url).acked_resources.keys(),
            sent_clusters=self._status.of_type(types.CLUSTER).sent_resources.keys(),
            clusters_in_scope=self._clusters_in_scope,
            generation=lambda type_url: self._status.of_type(type_url).names_generation,
        )

    def _answered(self, type_url: str, nonce: str, *, acked: bool) -> None:
        """Envoy answered the response with `nonce`: count it, time an ACK."""
        sent_at = self._sent_at.get(type_url, {}).pop(nonce, None)
        if not acked:
            return
        status = self._status.of_type(type_url)
        if nonce == status.sent_nonce:
            status.acked_at = time.time()
        self._acked_once.add(type_url)
        self._context.metrics.acked(type_url, self._status.kind)
        if sent_at is not None:
            self._context.metrics.observe_sent_to_ack(
                type_url, self._status.kind, time.monotonic() - sent_at
            )

    def _record_nack(
        self,
        *,
        type_url: str,
        nonce: str,
        message: str,
        rejected: str,
        resources: dict[str, str],
    ) -> None:
        """Envoy rejected a response: keep its reason, count it, log it once.

        Envoy stays on the last version it accepted; the stream does not
        resend what it rejected until that changes. `resources` are the
        rejected resources (name -> version).
        """
        status = self._status.of_type(type_url)
        # Envoy's validation errors quote the rejected message whole, private
        # keys included: redacted before it is kept, logged or shown.
        message = redact_text(message)
        nack = Nack(
            version=status.sent_version,
            nonce=nonce,
            message=message,
            at=time.time(),
            resources=dict(resources),
        )
        status.last_nack = nack
        self._gate.rejected(type_url, resources)
        for name in resources:
            status.nacked_resources[name] = nack
        self._prune_nacks(type_url)
        self._answered(type_url, nonce, acked=False)
        self._context.metrics.nacked(type_url, self._status.kind)
        log.warning(
            "NACK: envoy %r (group %r) rejected %s %s: %s",
            self._status.node_id,
            self._status.node_cluster,
            type_url,
            rejected,
            one_line(message),
        )
        self._context.observer.nacked(
            Rejection(
                stream_id=self._status.stream_id,
                node_id=self._status.node_id,
                group=self._status.node_cluster,
                type_url=type_url,
                resources=nack.resources,
                message=message,
            )
        )

    def _prune_nacks(self, type_url: str) -> None:
        """Keep NACK records only of resources the Envoy is sent or held back from.

        Bounded by what the Envoy holds: a resource no longer sent has no
        status to report, unless the stream withholds it for its rejection.
        """
        status = self._status.of_type(type_url)
        if not status.nacked_resources:
            return
        keep = set(status.sent_resources) | set(self._held(type_url))
        for name in [n for n in status.nacked_resources if n not in keep]:
            del status.nacked_resources[name]

    def _record_ack(
        self,
        *,
        type_url: str,
        resources: Mapping[str, str],
        held_back: frozenset[str] = frozenset(),
    ) -> None:
        """Envoy accepted `resources` (name -> version): tell the observer."""
        self._context.observer.acked(
            Answer(
                stream_id=self._status.stream_id,
                node_id=self._status.node_id,
                group=self._status.node_cluster,
                type_url=type_url,
                resources=resources,
                held_back=held_back,
            )
        )

    @abc.abstractmethod
    def _on_request(self, request: Request) -> None: ...

    @abc.abstractmethod
    def _plain_ack(self, request: Request) -> bool:
        """`request` (before `_on_request` sees it) only ACKs, changing no subscription.

        Such a request cannot make anything due on a snapshot already sent:
        it only tells what the Envoy holds.
        """

    @abc.abstractmethod
    def _responses(self, snapshot: Snapshot, plan: Plan) -> Iterator[tuple[str, bytes]]:
        """(type_url, serialised response) for each response the snapshot calls for.

        Types in `plan.hold` are not sent; `plan.linger` names stay in CDS and EDS.
        """

    def _schedule_timeout(
        self, plan: Plan, wake: Callable[[], None], timer: asyncio.TimerHandle | None
    ) -> asyncio.TimerHandle | None:
        """Wake the stream when the oldest cluster waited for times out."""
        if timer is not None:
            timer.cancel()
        deadline = self._gate.next_deadline()
        if not plan.hold or deadline is None:
            return None
        delay = max(0.0, deadline - time.monotonic())
        return asyncio.get_running_loop().call_later(delay, wake)

    async def run(self, requests: AsyncIterator[Request]) -> AsyncIterator[bytes]:
        events: StreamEvents[Request] = StreamEvents()
        reader = asyncio.create_task(events.feed(requests))
        cancel_watch: Cancel | None = None
        timer: asyncio.TimerHandle | None = None
        # The snapshot version of the last pass if it held nothing back and
        # kept nothing lingering (see `_plain_ack`).
        quiet_at: str | None = None
        try:
            while True:
                batch = await events.next_batch()
                ended = False
                plain = True
                for item in batch:
                    if isinstance(item, Ended):
                        ended = True
                    elif isinstance(item, Woken):
                        plain = False
                    else:
                        plain = plain and self._plain_ack(item)
                        self._on_request(item)
                if ended:
                    return
                if self._group is None:
                    continue
                if cancel_watch is None:
                    cancel_watch = self._context.cache.watch(self._group, events.wake)
                snapshot = self._context.cache.current(self._group)
                if snapshot is None:
                    continue
                if plain and quiet_at == snapshot.version:
                    # Only ACKs, of a snapshot already sent with nothing held
                    # back or lingering: nothing can be due (half of a push's
                    # passes, times every stream). The gate still hears of
                    # them: an ACK is what settles a version.
                    self._gate.after_pass(
                        version=quiet_at,
                        plan=OPEN,
                        held=self._holdings(),
                        sent=frozenset(),
                        awaiting=self._awaiting,
                    )
                    continue
                another_pass = True
                while another_pass:
                    version = snapshot.version
                    plan = self._gate.plan(snapshot, version, self._holdings(), time.monotonic())
                    sent: set[str] = set()
                    for type_url, response in self._responses(snapshot, plan):
                        yield response
                        self._sent(type_url, snapshot)
                        sent.add(type_url)
                    another_pass = self._gate.after_pass(
                        version=version,
                        plan=plan,
                        held=self._holdings(),
                        sent=sent,
                        awaiting=self._awaiting,
                    )
                    timer = self._schedule_timeout(plan, events.wake, timer)
                    quiet_at = None if plan.hold or plan.linger else version
        finally:
            reader.cancel()
            if timer is not None:
                timer.cancel()
            if cancel_watch is not None:
                cancel_watch()
            for type_url in self._asked:
                self._context.metrics.type_closed(type_url, self._status.kind)
