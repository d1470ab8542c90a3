"""NACKs held per stream and resource until the resource is ACKed again.

A NACK stays against (stream, type_url, name) until the same stream ACKs
the snapshot's current version of that resource, the stream closes, or the
resource leaves the configuration. An ACK of an older version the server
held back in its place (`Answer.held_back`) fixes nothing: Envoy runs the
old configuration, and the object's change is still not applied. Turning what is
held into conditions is `programmed_conditions`, read through the origins
of the current configuration.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Container, Mapping
from dataclasses import dataclass

from xds_ingress import ir
from xds_ingress.server.observer import Answer, Rejection
from xds_ingress.server.registry import one_line
from xds_ingress.status.origins import Origins, ResourceKey, type_name

PROGRAMMED = "Programmed"
REJECTED = "Rejected"
# A condition message becomes a Kubernetes Event's, which the API caps at
# 1 KiB; Envoy's own text can be far longer (see `summary`).
MAX_MESSAGE_CHARS = 600
PROTO_VALIDATION = "Proto constraint validation failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class Held:
    node_id: str
    group: str
    version: str
    message: str


class Rejections:
    """What each stream's Envoy has rejected and not yet accepted since."""

    def __init__(self) -> None:
        self._by_stream: dict[int, dict[ResourceKey, Held]] = {}

    def nacked(self, rejection: Rejection) -> bool:
        """Hold the rejected resources; True if that changed anything."""
        held = self._by_stream.setdefault(rejection.stream_id, {})
        changed = False
        for name, version in rejection.resources.items():
            if not version:
                continue  # a rejected removal: Envoy keeps a resource we dropped
            key = (rejection.type_url, name)
            entry = Held(
                node_id=rejection.node_id,
                group=rejection.group,
                version=version,
                message=one_line(rejection.message),
            )
            if held.get(key) != entry:
                held[key] = entry
                changed = True
        return changed

    def acked(self, answer: Answer) -> bool:
        """Release what `answer` accepted; True if something was held. O(1) when nothing is."""
        held = self._by_stream.get(answer.stream_id)
        if not held:
            return False
        released = False
        for name in answer.resources:
            if name in answer.held_back:
                continue
            if held.pop((answer.type_url, name), None) is not None:
                released = True
        if not held:
            del self._by_stream[answer.stream_id]
        return released

    def stream_closed(self, stream_id: int) -> bool:
        return self._by_stream.pop(stream_id, None) is not None

    def keep_only(self, wanted: Container[ResourceKey]) -> bool:
        """Forget resources no longer configured (they will never be ACKed again)."""
        if not self._by_stream:
            return False  # nothing to look up (origins are worked out on demand)
        changed = False
        for stream_id in list(self._by_stream):
            held = self._by_stream[stream_id]
            for key in [key for key in held if key not in wanted]:
                del held[key]
                changed = True
            if not held:
                del self._by_stream[stream_id]
        return changed

    def held(self) -> Mapping[ResourceKey, tuple[Held, ...]]:
        """Every rejected resource, with one entry per stream holding it."""
        by_key: dict[ResourceKey, list[Held]] = defaultdict(list)
        for held in self._by_stream.values():
            for key, entry in held.items():
                by_key[key].append(entry)
        return {key: tuple(sorted(entries, key=_node)) for key, entries in by_key.items()}


def by_object(
    held: Mapping[ResourceKey, tuple[Held, ...]], *, origins: Origins
) -> dict[ir.ObjectRef, list[tuple[ResourceKey, Held]]]:
    """Each object behind a rejected resource, with the rejections it is behind."""
    found: dict[ir.ObjectRef, list[tuple[ResourceKey, Held]]] = defaultdict(list)
    for key in sorted(held):
        for ref in origins.get(key, frozenset()):
            found[ref].extend((key, entry) for entry in held[key])
    return dict(found)


def programmed_conditions(
    held: Mapping[ResourceKey, tuple[Held, ...]], *, origins: Origins
) -> tuple[ir.Condition, ...]:
    """One Programmed=False condition per object behind a rejected resource."""
    per_object: dict[ir.ObjectRef, list[str]] = defaultdict(list)
    for key in sorted(held):
        refs = origins.get(key, frozenset())
        if not refs:
            continue
        message = _message(key, held[key])
        for ref in refs:
            per_object[ref].append(message)
    conditions = []
    for ref, messages in per_object.items():
        message = messages[0]
        if len(messages) > 1:
            message += f" (and {len(messages) - 1} more rejected resources)"
        conditions.append(
            ir.Condition(
                object=ref,
                type=PROGRAMMED,
                status=ir.ConditionStatus.FALSE,
                reason=REJECTED,
                message=message,
            )
        )
    return tuple(sorted(conditions))


def _message(key: ResourceKey, entries: tuple[Held, ...]) -> str:
    type_url, name = key
    nodes = {(entry.group, entry.node_id) for entry in entries}
    who = "Envoy" if len(nodes) == 1 else f"{len(nodes)} Envoys"
    return f"{who} rejected {type_name(type_url)} {name}: {summary(entries[0].message)}"


def summary(message: str) -> str:
    """The reason in Envoy's error, without the resource it quotes first.

    Envoy writes "<the whole resource as text>: <reason>"; for a route config
    of a thousand routes the quote is most of it, and the reason comes last.
    """
    start = message.find(PROTO_VALIDATION)
    if start > 0:
        message = message[start:]
    if len(message) > MAX_MESSAGE_CHARS:
        message = "..." + message[-MAX_MESSAGE_CHARS:]
    return message


def _node(entry: Held) -> tuple[str, str]:
    return (entry.group, entry.node_id)
