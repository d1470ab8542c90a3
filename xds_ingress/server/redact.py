"""Secret material never leaves through inspection: redact resources and error texts.

Envoy marks the fields that hold secrets with the `udpa.annotations.sensitive`
option (a TLS certificate's private_key, pkcs12 and password, session ticket
keys, generic secrets, private key provider configs). Envoy's own config dump
redacts them the same way: every string and bytes value below a sensitive
field becomes "[redacted]", and an Any is unpacked so the same holds inside
typed_config and friends. An Any of a type this process does not know could
hide anything, so its value is dropped.

Error texts need the same care: Envoy's proto validation errors print the
whole rejected message (`Proto constraint validation failed (...): <the
message>`), so the NACK of a Secret can quote its private key back at us.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf import any_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from udpa.annotations import sensitive_pb2

from xds_ingress.cache import Resource

REDACTED = "[redacted]"

_ANY = any_pb2.Any.DESCRIPTOR.full_name

# The sensitive fields of envoy.extensions.transport_sockets.tls.v3 (the only
# ones in the Envoy API), as they appear in protobuf text format. Over-matching
# an unrelated field of the same name only hides a little of an error text.
SENSITIVE_TEXT_FIELDS = ("private_key", "pkcs12", "password", "keys", "secret", "secrets")

_PEM_PRIVATE_KEY = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(?:-----END \1PRIVATE KEY-----|$)", re.S
)
_SENSITIVE_BLOCK = re.compile(r"\b(?:" + "|".join(SENSITIVE_TEXT_FIELDS) + r")\s*:?\s*\{")


def _is_sensitive(field: FieldDescriptor) -> bool:
    return bool(field.GetOptions().Extensions[sensitive_pb2.sensitive])


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and bool(
        field.message_type.GetOptions().map_entry
    )


class Redactor:
    """Redacts messages; holds what it learnt about each message type, so one per server."""

    def __init__(self, *, pool: descriptor_pool.DescriptorPool | None = None) -> None:
        self._pool = pool if pool is not None else descriptor_pool.Default()
        # Message types that can hold neither a sensitive field nor an Any:
        # most of a snapshot (endpoints, routes) is skipped without a walk.
        self._inert: dict[str, bool] = {}

    def redact(self, message: Message) -> Message:
        """`message` itself when it holds no secret, else a redacted copy."""
        if not self._holds_secret(message):
            return message
        copy = type(message)()
        copy.CopyFrom(message)
        self._redact_in_place(copy)
        return copy

    def resource_any(self, resource: Resource) -> any_pb2.Any:
        """A snapshot resource as an Any, redacted; its cached bytes when nothing is secret."""
        redacted = self.redact(resource.message)
        if redacted is resource.message:
            return resource.to_any()
        return any_pb2.Any(
            type_url=resource.type_url, value=redacted.SerializeToString(deterministic=True)
        )

    # ---------------------------------------------------------------- reading

    def _inert_type(self, descriptor: Descriptor) -> bool:
        known = self._inert.get(descriptor.full_name)
        if known is not None:
            return known
        # Settle every type reachable from here together: types can be
        # recursive (Struct and Value), which a one-pass walk gets wrong.
        reachable: dict[str, Descriptor] = {}
        stack = [descriptor]
        while stack:
            current = stack.pop()
            if current.full_name in reachable or current.full_name in self._inert:
                continue
            reachable[current.full_name] = current
            stack.extend(_message_types(current))
        live = {
            name
            for name, current in reachable.items()
            if name == _ANY or any(_is_sensitive(field) for field in current.fields)
        }
        changed = True
        while changed:
            changed = False
            for name, current in reachable.items():
                if name not in live and any(
                    inner.full_name in live or self._inert.get(inner.full_name) is False
                    for inner in _message_types(current)
                ):
                    live.add(name)
                    changed = True
        for name in reachable:
            self._inert[name] = name not in live
        return self._inert[descriptor.full_name]

    def _unpack(self, packed: any_pb2.Any) -> Message | None:
        type_name = packed.type_url.rpartition("/")[2]
        try:
            descriptor = self._pool.FindMessageTypeByName(type_name)
        except KeyError:
            return None
        unpacked: Message = message_factory.GetMessageClass(descriptor)()
        unpacked.ParseFromString(packed.value)
        return unpacked

    def _holds_secret(self, message: Message) -> bool:
        descriptor = message.DESCRIPTOR
        if self._inert_type(descriptor):
            return False
        if descriptor.full_name == _ANY:
            inner = self._unpack(message)
            return inner is None or self._holds_secret(inner)
        for field, value in message.ListFields():
            if _is_sensitive(field):
                return True
            if field.type != FieldDescriptor.TYPE_MESSAGE:
                continue
            if any(self._holds_secret(item) for item in _messages(field, value)):
                return True
        return False

    # ---------------------------------------------------------------- writing

    def _redact_any_in_place(self, packed: any_pb2.Any) -> bool:
        """Redact inside an Any; True if anything was redacted."""
        inner = self._unpack(packed)
        if inner is None:
            if not packed.value:
                return False
            packed.value = b""
            return True
        if not self._holds_secret(inner):
            return False
        self._redact_in_place(inner)
        packed.value = inner.SerializeToString(deterministic=True)
        return True

    def _redact_in_place(self, message: Message) -> None:
        if message.DESCRIPTOR.full_name == _ANY:
            self._redact_any_in_place(message)
            return
        for field, value in message.ListFields():
            if _is_sensitive(field):
                _blank(message, field, value)
            elif field.type == FieldDescriptor.TYPE_MESSAGE and not self._inert_type(
                field.message_type
            ):
                for item in _messages(field, value):
                    self._redact_in_place(item)


def _message_types(descriptor: Descriptor) -> list[Descriptor]:
    return [
        field.message_type
        for field in descriptor.fields
        if field.type == FieldDescriptor.TYPE_MESSAGE
    ]


def _messages(field: FieldDescriptor, value: Any) -> list[Message]:
    """The messages a set message field holds (one, a list, or a map's values)."""
    if _is_map(field):
        value_field = field.message_type.fields_by_name["value"]
        if value_field.type != FieldDescriptor.TYPE_MESSAGE:
            return []
        return list(value.values())
    if field.is_repeated:
        return list(value)
    return [value]


def _blank(message: Message, field: FieldDescriptor, value: Any) -> None:
    """Replace every string and bytes value at and below `field` with REDACTED."""
    if field.type == FieldDescriptor.TYPE_STRING:
        if field.is_repeated:
            value[:] = [REDACTED] * len(value)
        else:
            setattr(message, field.name, REDACTED)
    elif field.type == FieldDescriptor.TYPE_BYTES:
        if field.is_repeated:
            value[:] = [REDACTED.encode()] * len(value)
        else:
            setattr(message, field.name, REDACTED.encode())
    elif _is_map(field):
        value_field = field.message_type.fields_by_name["value"]
        for key in list(value):
            if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                _blank_all(value[key])
            elif value_field.type == FieldDescriptor.TYPE_STRING:
                value[key] = REDACTED
            elif value_field.type == FieldDescriptor.TYPE_BYTES:
                value[key] = REDACTED.encode()
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        for item in _messages(field, value):
            _blank_all(item)


def _blank_all(message: Message) -> None:
    if message.DESCRIPTOR.full_name == _ANY:
        # Below a sensitive field nothing is kept, whatever the type.
        message.value = b""
        return
    for field, value in message.ListFields():
        _blank(message, field, value)


def redact_text(text: str) -> str:
    """Remove private keys and sensitive fields from an error text (Envoy's NACK details)."""
    text = _PEM_PRIVATE_KEY.sub(REDACTED, text)
    parts: list[str] = []
    position = 0
    while (found := _SENSITIVE_BLOCK.search(text, position)) is not None:
        end = _closing_brace(text, found.end())
        parts.append(text[position : found.end()] + f" {REDACTED} ")
        position = end
    parts.append(text[position:])
    return "".join(parts)


def _closing_brace(text: str, start: int) -> int:
    """Index of the `}` closing a text-format block whose body starts at `start`.

    Quoted strings are skipped (they may hold braces); an unclosed block runs
    to the end of the text, which is then redacted whole.
    """
    depth = 1
    index = start
    while index < len(text):
        char = text[index]
        if char in "\"'":
            index += 1
            while index < len(text) and text[index] != char:
                index += 2 if text[index] == "\\" else 1
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
        index += 1
    return len(text)
