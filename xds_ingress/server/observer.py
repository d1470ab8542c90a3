"""What the server tells the rest of the control plane about Envoys' answers.

The server must not reach into the store or translate; it only reports what
Envoy said through this observer, and app.py decides who listens (the status
stage, which maps a rejected resource back to the objects that produced it).
Callbacks run on the event loop inside a stream's loop, for every ACK of
every Envoy: they must be cheap and must not raise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """One ACK or NACK from one stream."""

    stream_id: int
    node_id: str
    group: str
    type_url: str
    # name -> version of each resource the answer is about ("" for a removal).
    resources: Mapping[str, str]
    # Names in `resources` sent at an older version than the snapshot holds,
    # because this Envoy rejected the snapshot's (state of the world keeps it
    # on the last version it accepted). Accepting those fixes nothing.
    held_back: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection(Answer):
    """A NACK; `message` is Envoy's error text, already redacted."""

    message: str


class XdsObserver(Protocol):
    def acked(self, answer: Answer) -> None:
        """Envoy accepted `answer.resources` at those versions."""

    def nacked(self, rejection: Rejection) -> None:
        """Envoy rejected `rejection.resources`; it keeps what it had."""

    def stream_closed(self, *, stream_id: int) -> None:
        """The stream is gone: whatever it ACKed or NACKed no longer counts."""


class NullObserver:
    """The observer when nobody listens."""

    def acked(self, answer: Answer) -> None:
        pass

    def nacked(self, rejection: Rejection) -> None:
        pass

    def stream_closed(self, *, stream_id: int) -> None:
        pass
