"""A message kept as its serialised bytes, assembled from encoded pieces.

Protobuf lets a message be assembled by concatenating its encoded fields.
A route configuration of thousands of virtual hosts, one of which changed,
is then a join of the hosts' cached bytes: built as a message it was a copy
of every host, the largest single cost of a rebuild after a one-Ingress
change at 3000 Ingresses (bench/README.md, route-propagation). Envoy is
sent the bytes; the message is parsed only if something reads it (an
inspection dump, a static bootstrap, a test).
"""

from __future__ import annotations

from typing import Generic, TypeVar, cast

from google.protobuf.message import Message

M = TypeVar("M", bound=Message)


class Encoded(Generic[M]):
    """`data` is what `message_type(...).SerializeToString(deterministic=True)` would give."""

    __slots__ = ("_parsed", "data", "message_type")

    message_type: type[M]
    data: bytes
    _parsed: M | None

    def __init__(self, message_type: type[M], data: bytes) -> None:
        self.message_type = message_type
        self.data = data
        self._parsed = None

    def message(self) -> M:
        """The message, parsed on first use; shared: treat it as read-only."""
        parsed = self._parsed
        if parsed is None:
            # FromString is untyped in protobuf's stubs.
            parsed = cast(M, self.message_type.FromString(self.data))
            self._parsed = parsed
        return parsed

    def __repr__(self) -> str:
        return f"Encoded({self.message_type.DESCRIPTOR.full_name}, {len(self.data)} bytes)"


def message_of(value: Message | Encoded[Message]) -> Message:
    """The message itself, whichever form it is held in."""
    return value.message() if isinstance(value, Encoded) else value


def varint(value: int) -> bytes:
    """Encode `value` as a protobuf base-128 varint."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_delimited(field_number: int, payload: bytes) -> bytes:
    """Encode one length-delimited protobuf field (wire type 2)."""
    return varint(field_number << 3 | 2) + varint(len(payload)) + payload
