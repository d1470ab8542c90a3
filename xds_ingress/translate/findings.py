"""Conditions collected while translating, one finding at a time."""

from __future__ import annotations

from collections.abc import Iterable

from xds_ingress import ir
from xds_ingress.sources.objects import KubeObject

ACCEPTED = "Accepted"
RESOLVED_REFS = "ResolvedRefs"
# Messages quote what the user wrote, which may be a megabyte of junk; status
# (and a log line) needs only the start. Kubernetes caps a condition message
# at 32768 characters.
MAX_MESSAGE = 1024


class Findings:
    """A per-call collector; translate creates one and returns its conditions."""

    def __init__(self) -> None:
        # A dict for its order: conditions mostly come in object order, which
        # the final sort then finds in long runs (a set's order made it a
        # full sort of thousands).
        self._conditions: dict[ir.Condition, None] = {}
        self._rejected: set[ir.ObjectRef] = set()
        self._unresolved: set[ir.ObjectRef] = set()

    def problem(self, obj: KubeObject, *, type: str, reason: str, message: str) -> None:
        """Record something wrong with `obj` (a condition with status False)."""
        self._add(obj, type=type, status=ir.ConditionStatus.FALSE, reason=reason, message=message)

    def rejected(self, obj: KubeObject, *, reason: str, message: str) -> None:
        """Part of `obj` was not served as written."""
        self._rejected.add(obj.ref)
        self.problem(obj, type=ACCEPTED, reason=reason, message=message)

    def unresolved(self, obj: KubeObject, *, reason: str, message: str) -> None:
        """A reference in `obj` does not resolve; its routes answer 503."""
        self._unresolved.add(obj.ref)
        self.problem(obj, type=RESOLVED_REFS, reason=reason, message=message)

    def accept(self, obj: KubeObject, *, message: str) -> None:
        """Mark `obj` Accepted, unless some part of it was rejected."""
        self.accept_condition(accepted_condition(obj, message=message))

    def accept_condition(self, condition: ir.Condition) -> None:
        """Add `condition`, an Accepted=True made earlier, unless its object was partly rejected."""
        if condition.object not in self._rejected:
            self._conditions[condition] = None

    def accept_conditions(self, conditions: Iterable[ir.Condition]) -> None:
        """accept_condition for each of `conditions` (one per Ingress, at every translation)."""
        rejected = self._rejected
        if rejected:
            conditions = [each for each in conditions if each.object not in rejected]
        self._conditions.update(dict.fromkeys(conditions))

    def resolved(self, obj: KubeObject, *, message: str) -> None:
        """Mark `obj` ResolvedRefs True, unless some reference in it did not resolve."""
        if obj.ref in self._unresolved:
            return
        self._add(
            obj,
            type=RESOLVED_REFS,
            status=ir.ConditionStatus.TRUE,
            reason=RESOLVED_REFS,
            message=message,
        )

    def __bool__(self) -> bool:
        """True once anything was found."""
        return bool(self._conditions)

    def extend(self, other: Findings) -> None:
        """Take in what `other` found (a memoised result's findings, replayed)."""
        if other._conditions:
            self._conditions.update(other._conditions)
            self._rejected |= other._rejected
            self._unresolved |= other._unresolved

    def conditions(self) -> tuple[ir.Condition, ...]:
        return tuple(sorted(self._conditions, key=ir.condition_order))

    def _add(
        self, obj: KubeObject, *, type: str, status: ir.ConditionStatus, reason: str, message: str
    ) -> None:
        condition = _condition(obj, type=type, status=status, reason=reason, message=message)
        self._conditions[condition] = None


def accepted_condition(obj: KubeObject, *, message: str) -> ir.Condition:
    """`obj` is Accepted (see Findings.accept_condition)."""
    return _condition(
        obj, type=ACCEPTED, status=ir.ConditionStatus.TRUE, reason=ACCEPTED, message=message
    )


def _condition(
    obj: KubeObject, *, type: str, status: ir.ConditionStatus, reason: str, message: str
) -> ir.Condition:
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return ir.Condition(object=obj.ref, type=type, status=status, reason=reason, message=message)
