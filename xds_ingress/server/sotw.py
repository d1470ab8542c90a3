"""State-of-the-world xDS streams (StreamAggregatedResources and friends).

Each response carries every requested resource of its type; for LDS and CDS
a resource missing from a response is deleted by Envoy, so removals need no
special message. See the xDS protocol, "ACK/NACK and resource type instance
version" and "When to send an update".
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from xds_ingress.cache import Snapshot, TypeSnapshot
from xds_ingress.resources import types
from xds_ingress.server.registry import StreamKind, StreamStatus
from xds_ingress.server.stream import (
    WILDCARD_TYPES,
    StreamContext,
    XdsStream,
    in_ads_order,
)

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
    sent_names: dict[str, str] = field(default_factory=dict)


class SotwStream(XdsStream[DiscoveryRequest]):
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
                self._record_nack(
                    type_url=type_url,
                    nonce=request.response_nonce,
                    message=request.error_detail.message,
                    rejected=f"version {status.sent_version} "
                    f"(keeps {request.version_info or 'nothing'})",
                    # The whole response is rejected; what it changed is
                    # what Envoy refused (the rest it already held).
                    resources={
                        name: version
                        for name, version in state.sent_names.items()
                        if status.acked_resources.get(name) != version
                    },
                )
            else:
                status.acked_version = request.version_info
                status.acked_resources = dict(state.sent_names)
                self._context.metrics.acked(type_url, StreamKind.SOTW)
                self._record_ack(type_url=type_url, resources=status.acked_resources)
        else:
            # A first request for this type on this stream: always answered,
            # even when Envoy says it already has our version (reconnect).
            state.resend = True
        names = frozenset(request.resource_names)
        state.wildcard = "*" in names or (not names and type_url in WILDCARD_TYPES)
        state.names = names - {"*"}
        state.requested = True
        status.wildcard = state.wildcard
        status.subscribed = set(state.names)

    def _responses(self, snapshot: Snapshot) -> Iterator[bytes]:
        for type_url in in_ads_order(set(self._types)):
            state = self._types[type_url]
            if not state.requested:
                continue
            response = self._response_for(type_url, state, snapshot.of_type(type_url))
            if response is not None:
                yield response

    def _response_for(
        self, type_url: str, state: _TypeState, resources: TypeSnapshot
    ) -> bytes | None:
        if state.wildcard:
            key = resources.version
            selected = resources.resources
        else:
            selected = {
                name: resources.resources[name]
                for name in sorted(state.names)
                if name in resources.resources
            }
            if not selected:
                # Nothing asked for exists yet: answered when it appears.
                return None
            key = hashlib.blake2b(
                "".join(f"{n}={r.version};" for n, r in selected.items()).encode(),
                digest_size=10,
            ).hexdigest()
        if key == state.sent_key and not state.resend:
            return None
        state.sent_key = key
        state.resend = False
        state.nonce = self._next_nonce()
        if state.wildcard:
            body = self._shared.wildcard_body(resources)
        else:
            body = self._shared.header(type_url=type_url, version=key) + b"".join(
                resource.sotw_piece for resource in selected.values()
            )
        state.sent_names = {name: resource.version for name, resource in selected.items()}
        status = self._status.of_type(type_url)
        status.sent_version = key
        status.sent_nonce = state.nonce
        status.sent_resources = dict(state.sent_names)
        self._context.metrics.pushed(type_url, StreamKind.SOTW)
        if type_url == types.CLUSTER and types.ENDPOINT in self._types:
            # A changed cluster is re-created and warms until it gets its
            # ClusterLoadAssignment again, even if that did not change.
            self._types[types.ENDPOINT].resend = True
        log.debug("sent %s version %s nonce %s", type_url, key, state.nonce)
        return with_nonce(body, state.nonce)
