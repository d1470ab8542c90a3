"""The resource builder's output as messages only, for tests that read route configurations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.message import Message

from xds_ingress.resources.encoded import Encoded, message_of


def as_messages(
    resources: Mapping[str, Mapping[str, Message | Encoded[Message]]],
) -> dict[str, dict[str, Any]]:
    """Every resource as a message: route configurations come Encoded (parsed here)."""
    return {
        url: {name: message_of(value) for name, value in by_name.items()}
        for url, by_name in resources.items()
    }
