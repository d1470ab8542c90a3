"""The status stage: conditions from each build plus what Envoys rejected.

It listens to the pipeline (`built`, after every successful build) and to
the xDS server (`XdsObserver`: every ACK, NACK and closed stream). A NACK is
mapped to the objects behind the rejected resources (`origins`), logged once
per object naming it and its file, and held as a `Programmed` condition
(status False, reason `Rejected`) until that stream ACKs the resource at the
snapshot's version (not an older one held back in its place: see rejections).

Everything here runs on the event loop and only computes; writing status to
Kubernetes is the `StatusSink`'s job, which must not block (see kube_writer).
"""

from __future__ import annotations

import logging
from typing import Protocol

from xds_ingress import ir
from xds_ingress.server.conditions import ObjectCondition, RejectedBy
from xds_ingress.server.observer import Answer, Rejection
from xds_ingress.status.origins import LazyOrigins, Locate, Origins, ResourceKey
from xds_ingress.status.rejections import (
    PROGRAMMED,
    REJECTED,
    Held,
    Rejections,
    by_object,
    programmed_conditions,
    summary,
)

log = logging.getLogger(__name__)

INGRESS = "Ingress"
ACCEPTED = "Accepted"


class StatusSink(Protocol):
    def update(
        self, *, ingresses: frozenset[ir.ObjectRef], conditions: tuple[ir.Condition, ...]
    ) -> None:
        """The Ingresses we serve and every condition now; must return at once."""


class StatusStage:
    """Implements server.observer.XdsObserver; `built` is the pipeline's hook."""

    def __init__(self, *, locate: Locate | None = None, sink: StatusSink | None = None) -> None:
        self._locate = locate
        self._sink = sink
        self._config: ir.Config | None = None
        self._origins: Origins = {}
        self._translated: tuple[ir.Condition, ...] = ()
        self._rejections = Rejections()
        self._programmed: tuple[ir.Condition, ...] = ()

    @property
    def origins(self) -> Origins:
        return self._origins

    def conditions(self) -> tuple[ir.Condition, ...]:
        """Every condition now: translate's, and Programmed=False for rejected objects."""
        if not self._programmed:
            return self._translated  # sorted already (ir.Translation)
        return tuple(sorted((*self._translated, *self._programmed), key=ir.condition_order))

    def programmed(self) -> tuple[ir.Condition, ...]:
        return self._programmed

    def object_conditions(self) -> tuple[ObjectCondition, ...]:
        """`conditions()` for the admin API (a server.conditions.ConditionSource),
        each Programmed=False with the Envoy rejections behind it."""
        behind = by_object(self._rejections.held(), origins=self._origins)
        return tuple(
            _object_condition(
                condition,
                behind.get(condition.object, [])
                if (condition.type, condition.reason) == (PROGRAMMED, REJECTED)
                else [],
            )
            for condition in self.conditions()
        )

    # ------------------------------------------------------------ the pipeline

    def built(self, translation: ir.Translation) -> None:
        if translation.config != self._config:
            self._config = translation.config
            self._origins = LazyOrigins(translation.config, locate=self._locate)
            self._rejections.keep_only(self._origins)
        self._translated = translation.conditions
        self._refresh()

    # ------------------------------------------------------------ the xDS server

    def nacked(self, rejection: Rejection) -> None:
        if self._rejections.nacked(rejection):
            self._refresh()

    def acked(self, answer: Answer) -> None:
        # Called for every ACK of every Envoy: cheap unless something is held.
        if self._rejections.acked(answer):
            self._refresh()

    def stream_closed(self, *, stream_id: int) -> None:
        if self._rejections.stream_closed(stream_id):
            self._refresh()

    # ------------------------------------------------------------

    def _refresh(self) -> None:
        programmed = programmed_conditions(self._rejections.held(), origins=self._origins)
        self._log_changes(before=self._programmed, after=programmed)
        self._programmed = programmed
        if self._sink is not None:
            self._sink.update(ingresses=self._ingresses(), conditions=self.conditions())

    def _ingresses(self) -> frozenset[ir.ObjectRef]:
        # translate marks every Ingress it claims Accepted (True or False).
        return frozenset(
            condition.object
            for condition in self._translated
            if condition.object.kind == INGRESS and condition.type == ACCEPTED
        )

    @staticmethod
    def _log_changes(*, before: tuple[ir.Condition, ...], after: tuple[ir.Condition, ...]) -> None:
        old = {condition.object: condition for condition in before}
        new = {condition.object: condition for condition in after}
        for ref, condition in new.items():
            if old.get(ref) != condition:
                log.warning("%s: %s", ref, condition.message)
        for ref in old.keys() - new.keys():
            log.info("%s: Envoy accepted its configuration again", ref)


def _object_condition(
    condition: ir.Condition, rejections: list[tuple[ResourceKey, Held]]
) -> ObjectCondition:
    ref = condition.object
    return ObjectCondition(
        kind=ref.kind,
        namespace=ref.namespace,
        name=ref.name,
        source=ref.source,
        type=condition.type,
        status=str(condition.status),
        reason=condition.reason,
        message=condition.message,
        rejections=tuple(
            RejectedBy(
                node_id=held.node_id,
                group=held.group,
                type_url=type_url,
                resource_name=name,
                version=held.version,
                # The reason, not the resource Envoy quotes whole (see summary):
                # ListNodes and CSDS have the full text.
                message=summary(held.message),
            )
            for (type_url, name), held in rejections
        ),
    )
