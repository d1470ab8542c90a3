"""State-of-the-world xDS streams (StreamAggregatedResources and friends).

Each response carries every requested resource of its type; for LDS and CDS
a resource missing from a response is deleted by Envoy, so removals need no
special message. See the xDS protocol, "ACK/NACK and resource type instance
version" and "When to send an update".
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from xds_ingress.cache import Resource, Snapshot, TypeSnapshot
from xds_ingress.resources import types
from xds_ingress.server.blame import blamed
from xds_ingress.server.registry import StreamKind, StreamStatus
from xds_ingress.server.stream import (
    WILDCARD_TYPES,
    StreamContext,
    XdsStream,
    in_ads_order,
)
from xds_ingress.server.warming import Plan

# Types whose resources outlive the snapshot until no route names them.
_LINGERING_TYPES = frozenset({types.CLUSTER, types.ENDPOINT})

log = logging.getLogger(__name__)

DiscoveryRequest: TypeAlias = Any  # xds-protos ships no type stubs
DiscoveryResponse: TypeAlias = Any  # xds-protos ships no type stubs


class SharedResponses:
    """Serialised wildcard responses, shared by every stream that sends them.

    The body lacks only the nonce, which each stream appends as one more
    encoded field: a thousand Envoys on one version cost one serialisation.
    """

    def __init__(self, *, control_plane_id: str, capacity: int = 256) -> None:
        self._control_plane = base_pb2.ControlPlane(identifier=control_plane_id)
        self._bodies: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._capacity = capacity
        self.built = 0

    def header(self, *, type_url: str, version: str) -> bytes:
        header: bytes = discovery_pb2.DiscoveryResponse(
            version_info=version, type_url=type_url, control_plane=self._control_plane
        ).SerializeToString()
        return header

    def wildcard_body(self, resources: TypeSnapshot) -> bytes:
        key = (resources.type_url, resources.version)
        body = self._bodies.get(key)
        if body is None:
            body = (
                self.header(type_url=resources.type_url, version=resources.version)
                + resources.sotw_pieces
            )
            self.built += 1
            self._bodies[key] = body
            if len(self._bodies) > self._capacity:
                self._bodies.popitem(last=False)
        else:
            self._bodies.move_to_end(key)
        return body


def with_nonce(body: bytes, nonce: str) -> bytes:
    tail: bytes = discovery_pb2.DiscoveryResponse(nonce=nonce).SerializeToString()
    return body + tail


@dataclass(frozen=True, slots=True)
class _Hold:
    """A resource this stream's Envoy rejected, and what it is sent instead."""

    # The snapshot's version that was rejected: held while the snapshot still
    # has it, released as soon as the content changes (the fix gets its chance).
    rejected: str
    # The version the Envoy last accepted; None: it never accepted one, so
    # the resource is left out.
    substitute: Resource | None


@dataclass
class _TypeState:
    wildcard: bool = False
    names: frozenset[str] = frozenset()
    requested: bool = False
    # Content key of the last response, so an unchanged type is not resent
    # and a NACKed version is not pushed again in a loop.
    sent_key: str = ""
    nonce: str = ""
    resend: bool = False
    # The resources of the last response, and of the last one ACKed (read
    # only: for a wildcard they are the snapshot's own mapping, not a copy).
    sent: Mapping[str, Resource] = field(default_factory=dict)
    acked: Mapping[str, Resource] = field(default_factory=dict)
    # Names the last response carried at an older version than the snapshot's.
    sent_held: frozenset[str] = frozenset()
    holds: dict[str, _Hold] = field(default_factory=dict)
    # The version of the TypeSnapshot the last response's selection (by
    # name, nothing held back or lingering) was made from: a later one that
    # changed none of `names` (see TypeSnapshot.changed_since) would select
    # the same again, so the pass is over without copying every name.
    selected_from: str | None = None


class SotwStream(XdsStream[DiscoveryRequest]):
    """A state-of-the-world stream.

    Each response repeats every resource of its type, so a resource Envoy
    rejected would be in every later one and get all of them rejected too:
    one bad cluster would freeze every cluster change for this Envoy. So on
    a NACK the resources Envoy blamed (see `blame`) are held back: later
    responses carry the version this Envoy last accepted, or leave the
    resource out if it never accepted one, until the snapshot's version of
    it changes. A stream with holds builds its own response bodies; healthy
    streams keep sharing one.
    """

    def __init__(
        self,
        *,
        context: StreamContext,
        status: StreamStatus,
        fixed_type: str | None,
        shared: SharedResponses,
    ) -> None:
        super().__init__(context=context, status=status, fixed_type=fixed_type)
        self._shared = shared
        self._types: dict[str, _TypeState] = {}

    def _held(self, type_url: str) -> Iterable[str]:
        state = self._types.get(type_url)
        return state.holds.keys() if state is not None else ()

    def _on_request(self, request: DiscoveryRequest) -> None:
        if request.HasField("node"):
            self._learn_node(request.node)
        type_url = self._type_of(request.type_url)
        if type_url is None:
            return
        state = self._types.setdefault(type_url, _TypeState())
        status = self._status.of_type(type_url)
        if request.response_nonce:
            if request.response_nonce != state.nonce:
                # The spec: a request with a stale nonce is superseded by one
                # already sent or about to be; ignore it entirely.
                log.debug("stale nonce %s for %s ignored", request.response_nonce, type_url)
                return
            if request.HasField("error_detail"):
                self._on_nack(type_url, state, request)
            else:
                state.acked = state.sent
                status.acked_version = request.version_info
                # What the answered (latest) response carried, as recorded
                # when it was sent; neither mapping is changed in place.
                if status.acked_resources is not status.sent_resources:
                    status.acked_resources = status.sent_resources
                    status.names_generation += 1
                self._answered(type_url, request.response_nonce, acked=True)
                self._record_ack(
                    type_url=type_url,
                    resources=status.acked_resources,
                    held_back=state.sent_held,
                )
        else:
            # A first request for this type on this stream: always answered,
            # even when Envoy says it already has our version (reconnect).
            state.resend = True
        names = frozenset(request.resource_names)
        wildcard = "*" in names or (not names and type_url in WILDCARD_TYPES)
        names = names - {"*"}
        state.requested = True
        if wildcard == state.wildcard and names == state.names:
            # Most requests are ACKs naming what they named before.
            return
        state.wildcard = wildcard
        state.names = names
        state.selected_from = None
        status.wildcard = state.wildcard
        status.subscribed = set(state.names)
        status.names_generation += 1

    def _plain_ack(self, request: DiscoveryRequest) -> bool:
        if not request.response_nonce or request.HasField("error_detail"):
            return False
        type_url = self._peek_type(request.type_url)
        state = self._types.get(type_url) if type_url is not None else None
        if state is None or not state.requested or self._group is None:
            return False
        names = frozenset(request.resource_names)
        wildcard = "*" in names or (not names and type_url in WILDCARD_TYPES)
        return wildcard == state.wildcard and names - {"*"} == state.names

    def _on_nack(self, type_url: str, state: _TypeState, request: DiscoveryRequest) -> None:
        status = self._status.of_type(type_url)
        message = request.error_detail.message
        # The whole response is rejected, but what Envoy already held it had
        # accepted before: only what the response changed can be at fault.
        changed = {
            name: resource
            for name, resource in state.sent.items()
            if (accepted := state.acked.get(name)) is None or accepted.version != resource.version
        }
        at_fault = blamed(message, changed)
        for name in at_fault:
            state.holds[name] = _Hold(
                rejected=changed[name].version, substitute=state.acked.get(name)
            )
        status.held_back = frozenset(state.holds)
        self._record_nack(
            type_url=type_url,
            nonce=request.response_nonce,
            message=message,
            rejected=f"version {status.sent_version} "
            f"(keeps {request.version_info or 'nothing'}; "
            f"holds back {', '.join(sorted(at_fault)) or 'nothing'})",
            resources={name: changed[name].version for name in at_fault},
        )

    def _responses(self, snapshot: Snapshot, plan: Plan) -> Iterator[tuple[str, bytes]]:
        for type_url in in_ads_order(set(self._types)):
            state = self._types[type_url]
            if not state.requested or type_url in plan.hold:
                continue
            linger = plan.linger if type_url in _LINGERING_TYPES else frozenset()
            response = self._response_for(type_url, state, snapshot.of_type(type_url), linger)
            if response is not None:
                yield type_url, response

    @staticmethod
    def _release_changed(state: _TypeState, resources: TypeSnapshot) -> None:
        """Drop the holds of resources whose snapshot version is no longer the rejected one."""
        for name, hold in list(state.holds.items()):
            current = resources.resources.get(name)
            if current is None or current.version != hold.rejected:
                # Sent even if the fix reverts to what the Envoy was held on:
                # its ACK of the snapshot's version is what clears the status.
                del state.holds[name]
                state.resend = True

    @staticmethod
    def _lingering(
        state: _TypeState, resources: TypeSnapshot, linger: frozenset[str]
    ) -> dict[str, Resource]:
        """What the last response had of `linger` and the snapshot no longer has."""
        return {
            name: state.sent[name]
            for name in linger
            if name in state.sent
            and name not in resources.resources
            and (state.wildcard or name in state.names)
        }

    @staticmethod
    def _selection(
        state: _TypeState, resources: TypeSnapshot, lingering: Mapping[str, Resource]
    ) -> dict[str, Resource]:
        """What this stream is sent of `resources`: its names, holds and lingering applied."""
        if state.wildcard:
            selected = dict(resources.resources)
        else:
            selected = {
                name: resources.resources[name]
                for name in sorted(state.names)
                if name in resources.resources
            }
        for name, hold in state.holds.items():
            if name not in selected:
                continue
            if hold.substitute is None:
                del selected[name]
            else:
                selected[name] = hold.substitute
        selected.update(lingering)
        return selected

    def _response_for(
        self, type_url: str, state: _TypeState, resources: TypeSnapshot, linger: frozenset[str]
    ) -> bytes | None:
        if state.holds:
            self._release_changed(state, resources)
        lingering = self._lingering(state, resources, linger) if linger else {}
        selected: Mapping[str, Resource]
        shared = state.wildcard and not state.holds and not lingering
        if shared:
            # The common case, checked without copying anything: every
            # stream is woken on every publish.
            key = resources.version
            selected = resources.resources
        else:
            clean = not state.wildcard and not state.holds and not lingering
            if clean and not state.resend and state.selected_from is not None:
                names = resources.changed_since(state.selected_from)
                if names is not None and names.isdisjoint(state.names):
                    return None
            selected = self._selection(state, resources, lingering)
            if not selected and not state.wildcard:
                # Nothing asked for exists yet: answered when it appears.
                return None
            # The version a snapshot holding exactly this content would have.
            key = TypeSnapshot(type_url=type_url, resources=selected).version
            state.selected_from = resources.version if clean else None
        if key == state.sent_key and not state.resend:
            return None
        state.sent_key = key
        state.resend = False
        state.nonce = self._next_nonce()
        if shared:
            body = self._shared.wildcard_body(resources)
        else:
            body = self._shared.header(type_url=type_url, version=key) + b"".join(
                selected[name].sotw_piece for name in sorted(selected)
            )
        state.sent = selected
        state.sent_held = frozenset(name for name in state.holds if name in selected)
        status = self._status.of_type(type_url)
        status.sent_version = key
        status.sent_nonce = state.nonce
        status.sent_resources = (
            # Every healthy wildcard stream records the same: one mapping.
            resources.versions
            if shared
            else {name: resource.version for name, resource in selected.items()}
        )
        status.names_generation += 1
        status.held_back = frozenset(state.holds)
        self._prune_nacks(type_url)
        self._context.metrics.pushed(type_url, StreamKind.SOTW)
        if type_url == types.CLUSTER and types.ENDPOINT in self._types:
            # A changed cluster is re-created and warms until it gets its
            # ClusterLoadAssignment again, even if that did not change.
            self._types[types.ENDPOINT].resend = True
        log.debug("sent %s version %s nonce %s", type_url, key, state.nonce)
        return with_nonce(body, state.nonce)
