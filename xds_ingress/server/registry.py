"""What each connected Envoy was sent, ACKed and NACKed.

Streams write their own `StreamStatus`; inspection (logs, the admin API,
CSDS) only reads it. A NACK is recorded with Envoy's error text.
"""

from __future__ import annotations

import enum
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field


def one_line(text: str) -> str:
    """Envoy's error details span lines; a log line must not."""
    return " ".join(text.split())


class StreamKind(enum.StrEnum):
    SOTW = "sotw"
    DELTA = "delta"


@dataclass
class Nack:
    version: str
    nonce: str
    message: str
    at: float
    # name -> version of each resource the rejected response carried ("" for
    # a removal), so per-resource status can say which ones were rejected.
    resources: dict[str, str] = field(default_factory=dict)


@dataclass
class TypeStatus:
    type_url: str
    sent_version: str = ""
    sent_nonce: str = ""
    acked_version: str = ""
    last_nack: Nack | None = None
    # name -> version sent, so per-resource status can be reported.
    sent_resources: dict[str, str] = field(default_factory=dict)
    acked_resources: dict[str, str] = field(default_factory=dict)
    # name -> the last NACK that rejected it. Kept per resource because a
    # later NACK of another resource must not hide this one; it applies only
    # while the rejected version is still the one sent.
    nacked_resources: dict[str, Nack] = field(default_factory=dict)
    subscribed: set[str] = field(default_factory=set)
    wildcard: bool = False
    # State of the world: names kept on the version last accepted after a NACK.
    held_back: frozenset[str] = frozenset()
    # Bumped whenever the names sent, acked or subscribed to (or the
    # wildcard) may have changed, so per-push bookkeeping over those names
    # (the warming gate) can tell it has nothing new to look at.
    names_generation: int = 0
    # time.time() the response with `sent_nonce` was handed to gRPC, and the
    # Envoy's ACK of that very response was read (0.0: not yet). Wall clock,
    # so a client on the same machine can time a push from its own write.
    sent_at: float = 0.0
    acked_at: float = 0.0


@dataclass
class StreamStatus:
    stream_id: int
    kind: StreamKind
    peer: str
    node_id: str = ""
    node_cluster: str = ""
    connected_at: float = field(default_factory=time.time)
    types: dict[str, TypeStatus] = field(default_factory=dict)

    def of_type(self, type_url: str) -> TypeStatus:
        status = self.types.get(type_url)
        if status is None:
            status = self.types[type_url] = TypeStatus(type_url=type_url)
        return status


class StreamRegistry:
    def __init__(self) -> None:
        self._streams: dict[int, StreamStatus] = {}
        self._ids = itertools.count(1)

    def open(self, *, kind: StreamKind, peer: str) -> StreamStatus:
        status = StreamStatus(stream_id=next(self._ids), kind=kind, peer=peer)
        self._streams[status.stream_id] = status
        return status

    def close(self, status: StreamStatus) -> None:
        self._streams.pop(status.stream_id, None)

    def __iter__(self) -> Iterator[StreamStatus]:
        return iter(list(self._streams.values()))

    def __len__(self) -> int:
        return len(self._streams)
