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
                continue
            state.names.add(name)
            if not first:
                # A resubscription (e.g. a cluster re-created by a CDS
                # update and warming again) must be answered even when the
                # resource did not change.
                state.known.pop(name, None)
        for name in request.resource_names_unsubscribe:
            if name == "*":
                state.wildcard = False
                continue
            state.names.discard(name)
            state.known.pop(name, None)
        status = self._status.of_type(type_url)
        status.wildcard = state.wildcard
        status.subscribed = set(state.names)

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
        for name, version in sent.items():
            if version:
                status.acked_resources[name] = version
            else:
                status.acked_resources.pop(name, None)
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
        if not changed and not removed and (state.answered or not state.wildcard):
            # Nothing new. But a wildcard subscription is always answered
            # once: Envoy's cluster manager waits for its first CDS reply
            # before it opens any listener, even when there are no clusters.
            return None
        state.answered = True
        for resource in changed:
            state.known[resource.name] = resource.version
        for name in removed:
            del state.known[name]
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
        for name, version in sent.items():
            if version:
                status.sent_resources[name] = version
            else:
                status.sent_resources.pop(name, None)
        self._context.metrics.pushed(type_url, StreamKind.DELTA)
        if type_url == types.CLUSTER and types.ENDPOINT in self._types:
            # A changed cluster is re-created and warms until it gets its
            # ClusterLoadAssignment again, even if that did not change.
            endpoints = self._types[types.ENDPOINT]
            for resource in changed:
                endpoints.known.pop(resource.name, None)
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
