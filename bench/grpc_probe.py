"""One gRPC call at a time to a host behind Envoy, sorted into what a user sees.

The call is grpc.testing.TestService/EmptyCall, which the grpc-go interop
server answers; no generated stubs are needed for an empty message. Envoy
answers a host it has no route for with a 404, which reaches a gRPC client
as UNIMPLEMENTED: that is "not found" (the interop server implements
EmptyCall, so nothing else answers that). Anything else that is not OK (503 no
healthy upstream, a reset, a timeout) is "other", with its text kept.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

import grpc

EMPTY_CALL: Final = "/grpc.testing.TestService/EmptyCall"


class Outcome(enum.Enum):
    OK = "ok"
    NOT_FOUND = "not found"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Answer:
    outcome: Outcome
    text: str = ""


def _raw(message: bytes) -> bytes:
    # An Empty message is zero bytes each way: nothing to (de)serialise.
    return message


class Prober:
    """A channel to `target` (HOST:PORT) that sends `authority` as :authority."""

    def __init__(self, target: str, *, authority: str, timeout_seconds: float = 2.0) -> None:
        self._timeout = timeout_seconds
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.default_authority", authority),
                # A refused or reset connection must be retried at once, not
                # after gRPC's reconnect backoff (up to seconds).
                ("grpc.initial_reconnect_backoff_ms", 1),
                ("grpc.min_reconnect_backoff_ms", 1),
                ("grpc.max_reconnect_backoff_ms", 10),
                ("grpc.enable_retries", 0),
            ],
        )
        self._call = self._channel.unary_unary(
            EMPTY_CALL, request_serializer=_raw, response_deserializer=_raw
        )

    def call(self) -> Answer:
        try:
            self._call(b"", timeout=self._timeout, wait_for_ready=False)
        except grpc.RpcError as error:
            code = error.code() if isinstance(error, grpc.Call) else None
            details = (error.details() if isinstance(error, grpc.Call) else None) or ""
            # Envoy's 404 for an unknown host arrives as grpc-status 12 and
            # no message; nothing else here answers UNIMPLEMENTED.
            if code == grpc.StatusCode.UNIMPLEMENTED:
                return Answer(Outcome.NOT_FOUND)
            name = code.name if code is not None else "?"
            return Answer(Outcome.OTHER, f"{name}: {details[:200]}")
        return Answer(Outcome.OK)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Prober:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
