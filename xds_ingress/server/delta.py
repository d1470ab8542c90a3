"""Incremental (delta) xDS streams (DeltaAggregatedResources and friends).

The server keeps, per type, what it believes the Envoy holds (name →
version) and sends only differences: changed resources in `resources`,
deleted ones in `removed_resources`. A reconnecting Envoy states what it
holds in `initial_resource_versions`, so only what differs is sent again.
See the xDS protocol, "Incremental xDS".
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from xds_ingress.cache import Resource, Snapshot, TypeSnapshot
from xds_ingress.resources import types
from xds_ingress.server.registry import StreamKind, StreamStatus
from xds_ingress.server.stream import WILDCARD_TYPES, StreamContext, XdsStream, in_ads_order
from xds_ingress.server.warming import Plan

# Types whose resources outlive the snapshot until no route names them.
_LINGERING_TYPES = frozenset({types.CLUSTER, types.ENDPOINT})

log = logging.getLogger(__name__)

DeltaDiscoveryRequest: TypeAlias = Any  # xds-protos ships no type stubs
DeltaDiscoveryResponse: TypeAlias = Any  # xds-protos ships no type stubs


@dataclass
class _TypeState:
    wildcard: bool = False
    names: set[str] = field(default_factory=set)
    seen: bool = False
    answered: bool = False
    # What we believe the Envoy holds. Updated when we send, not when it
    # ACKs: a NACKed resource is then not pushed again until it changes.
    known: dict[str, str] = field(default_factory=dict)
    nonce: str = ""
    # Resources in flight per nonce, so an ACK can be recorded per resource.
    in_flight: dict[str, dict[str, str]] = field(default_factory=dict)
    # The version of the TypeSnapshot whose in-scope resources `known`
    # mirrors, but for the `dirty` names (None: not known to mirror one). A
    # later snapshot derived from it names what differs, so a push compares
    # those names and the dirty ones only, not every resource of the type.
    synced: str | None = None
    # Names whose entry in `known` was dropped or whose scope changed since
    # `synced` was set (a resubscription, a re-created cluster's assignment).
    dirty: set[str] = field(default_factory=set)


class DeltaStream(XdsStream[DeltaDiscoveryRequest]):
    def __init__(
        self, *, context: StreamContext, status: StreamStatus, fixed_type: str | None
    ) -> None:
        super().__init__(context=context, status=status, fixed_type=fixed_type)
        self._types: dict[str, _TypeState] = {}
        self._control_plane = base_pb2.ControlPlane(identifier=context.control_plane_id)

    def _on_request(self, request: DeltaDiscoveryRequest) -> None:
        if request.HasField("node"):
            self._learn_node(request.node)
        type_url = self._type_of(request.type_url)
        if type_url is None:
            return
        state = self._types.setdefault(type_url, _TypeState())
        first = not state.seen
        if first:
            state.seen = True
            state.known = dict(request.initial_resource_versions)
            if not request.resource_names_subscribe and type_url in WILDCARD_TYPES:
                state.wildcard = True
        if request.response_nonce:
            self._on_ack_or_nack(type_url, state, request)
        # Subscription changes count whatever the nonce: in delta xDS the
        # nonce only qualifies the ACK/NACK part of a request.
        for name in request.resource_names_subscribe:
            if name == "*":
                state.wildcard = True
                state.synced = None
                continue
            state.names.add(name)
            if not first:
                # A resubscription (e.g. a cluster re-created by a CDS
                # update and warming again) must be answered even when the
                # resource did not change.
                state.known.pop(name, None)
            state.dirty.add(name)
        for name in request.resource_names_unsubscribe:
            if name == "*":
                state.wildcard = False
                state.synced = None
                continue
            state.names.discard(name)
            state.known.pop(name, None)
            # Still in scope under a wildcard: then it must be sent again.
            state.dirty.add(name)
        if first:
            state.synced = None
        if first or request.resource_names_subscribe or request.resource_names_unsubscribe:
            # Copied only when it changes: an ACK of 10k endpoints names none.
            status = self._status.of_type(type_url)
            status.names_generation += 1
            status.wildcard = state.wildcard
            status.subscribed = set(state.names)

    def _plain_ack(self, request: DeltaDiscoveryRequest) -> bool:
        if not request.response_nonce or request.HasField("error_detail"):
            return False
        if request.resource_names_subscribe or request.resource_names_unsubscribe:
            return False
        type_url = self._peek_type(request.type_url)
        state = self._types.get(type_url) if type_url is not None else None
        return state is not None and state.seen and self._group is not None

    def _on_ack_or_nack(
        self, type_url: str, state: _TypeState, request: DeltaDiscoveryRequest
    ) -> None:
        sent = state.in_flight.pop(request.response_nonce, None)
        if sent is None:
            log.debug("stale nonce %s for %s ignored", request.response_nonce, type_url)
            return
        status = self._status.of_type(type_url)
        if request.HasField("error_detail"):
            # Only what changed is ever sent, and a rejected resource is not
            # resent until it changes again (`known` already has it): so
            # unlike state of the world, nothing needs holding back.
            self._record_nack(
                type_url=type_url,
                nonce=request.response_nonce,
                message=request.error_detail.message,
                rejected=", ".join(sorted(sent)) or "(removals only)",
                resources=sent,
            )
            return
        acked = status.acked_resources
        names_changed = False
        for name, version in sent.items():
            if version:
                names_changed = names_changed or name not in acked
                acked[name] = version
            elif acked.pop(name, None) is not None:
                names_changed = True
        if names_changed:
            status.names_generation += 1
        if request.response_nonce == state.nonce:
            status.acked_version = status.sent_version
        self._answered(type_url, request.response_nonce, acked=True)
        self._record_ack(type_url=type_url, resources=sent)

    def _responses(self, snapshot: Snapshot, plan: Plan) -> Iterator[tuple[str, bytes]]:
        for type_url in in_ads_order(set(self._types)):
            if type_url in plan.hold:
                continue
            linger = plan.linger if type_url in _LINGERING_TYPES else frozenset()
            response = self._response_for(type_url, self._types[type_url], snapshot, linger)
            if response is not None:
                yield type_url, response

    def _response_for(
        self, type_url: str, state: _TypeState, snapshot: Snapshot, linger: frozenset[str]
    ) -> bytes | None:
        resources: TypeSnapshot = snapshot.of_type(type_url)
        names = resources.changed_since(state.synced) if state.synced is not None else None
        if names is None:
            changed, removed, synced = self._compare_all(state, resources, linger)
        else:
            if state.dirty:
                names = names | state.dirty
            changed, removed, synced = self._compare_names(state, resources, names, linger)
        state.dirty.clear()
        if not changed and not removed and (state.answered or not state.wildcard):
            # Nothing new. But a wildcard subscription is always answered
            # once: Envoy's cluster manager waits for its first CDS reply
            # before it opens any listener, even when there are no clusters.
            state.synced = resources.version if synced else None
            return None
        state.answered = True
        for resource in changed:
            state.known[resource.name] = resource.version
        for name in removed:
            del state.known[name]
        state.synced = resources.version if synced else None
        state.nonce = self._next_nonce()
        sent = {resource.name: resource.version for resource in changed}
        sent.update({name: "" for name in removed})
        state.in_flight[state.nonce] = sent
        # Envoy answers every response, but bound the bookkeeping anyway.
        while len(state.in_flight) > 64:
            state.in_flight.pop(next(iter(state.in_flight)))
        status = self._status.of_type(type_url)
        status.sent_version = resources.version
        status.sent_nonce = state.nonce
        sent_resources = status.sent_resources
        names_changed = False
        for name, version in sent.items():
            if version:
                names_changed = names_changed or name not in sent_resources
                sent_resources[name] = version
            elif sent_resources.pop(name, None) is not None:
                names_changed = True
        if names_changed:
            status.names_generation += 1
        self._context.metrics.pushed(type_url, StreamKind.DELTA)
        if type_url == types.CLUSTER and types.ENDPOINT in self._types:
            # A changed cluster is re-created and warms until it gets its
            # ClusterLoadAssignment again, even if that did not change.
            endpoints = self._types[types.ENDPOINT]
            for resource in changed:
                endpoints.known.pop(resource.name, None)
                endpoints.dirty.add(resource.name)
        log.debug(
            "sent %s: %d changed, %d removed, nonce %s",
            type_url,
            len(changed),
            len(removed),
            state.nonce,
        )
        tail = discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=resources.version,
            type_url=type_url,
            removed_resources=removed,
            nonce=state.nonce,
            control_plane=self._control_plane,
        ).SerializeToString()
        return b"".join(resource.delta_piece for resource in changed) + bytes(tail)

    @staticmethod
    def _compare_all(
        state: _TypeState, resources: TypeSnapshot, linger: frozenset[str]
    ) -> tuple[list[Resource], list[str], bool]:
        """(changed, removed, whether `known` then mirrors the scope) over every resource."""
        in_scope = (
            resources.resources
            if state.wildcard
            else {
                name: resources.resources[name]
                for name in state.names
                if name in resources.resources
            }
        )
        changed: list[Resource] = [
            in_scope[name]
            for name in sorted(in_scope)
            if state.known.get(name) != in_scope[name].version
        ]
        removed = sorted(
            name
            for name in state.known
            if name not in resources.resources
            and (state.wildcard or name in state.names)
            # Removed only once no route the Envoy holds can name it.
            and name not in linger
        )
        # Once sent, every in-scope name is known at its version; with as
        # many names known, nothing else is.
        known_after = len(state.known) + sum(1 for r in changed if r.name not in state.known)
        return changed, removed, known_after - len(removed) == len(in_scope)

    @staticmethod
    def _compare_names(
        state: _TypeState,
        resources: TypeSnapshot,
        names: frozenset[str],
        linger: frozenset[str],
    ) -> tuple[list[Resource], list[str], bool]:
        """`_compare_all` when `known` mirrors an ancestor that differs only in `names`."""
        changed: list[Resource] = []
        removed: list[str] = []
        synced = True
        for name in sorted(names):
            if not (state.wildcard or name in state.names):
                continue
            resource = resources.resources.get(name)
            if resource is not None:
                if state.known.get(name) != resource.version:
                    changed.append(resource)
            elif name in state.known:
                if name in linger:
                    # Kept for the routes that may name it: known now holds
                    # more than the scope.
                    synced = False
                else:
                    removed.append(name)
        return changed, removed, synced
