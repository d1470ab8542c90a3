"""Gateway API status from translate's conditions: what a Gateway's and a route's status say.

translate reports findings per object (ir.Condition); the Gateway API wants
them per listener (a Gateway's status.listeners) and per parent (a route's
status.parents, one entry per parentRef and controller). The split is read
from where translate says a finding applies: its message starts with
"spec.listeners[i] (name)" or "spec.parentRefs[i]"; a finding without such a
prefix is about the whole object and applies to every listener or parent.

Everything here is pure: it computes the status wanted from the object as
the source holds it, and merges it into the status the API server has,
keeping each condition's lastTransitionTime while its status is unchanged
and leaving other controllers' parents entries alone. kube_writer does the
reading and writing.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xds_ingress import ir
from xds_ingress.sources.objects import (
    GATEWAY,
    GATEWAY_CLASS,
    GATEWAY_GROUP,
    GRPC_ROUTE,
    HTTP_ROUTE,
    KubeObject,
)
from xds_ingress.translate import fields
from xds_ingress.translate.gateways import (
    NamespaceLabels,
    RouteNamespaces,
    intersect_hostnames,
    no_labels,
    route_namespaces,
)

ACCEPTED = "Accepted"
PROGRAMMED = "Programmed"
RESOLVED_REFS = "ResolvedRefs"
LISTENERS_NOT_VALID = "ListenersNotValid"
INVALID = "Invalid"
INVALID_ROUTE_KINDS = "InvalidRouteKinds"
ROUTE_KINDS = (GRPC_ROUTE, HTTP_ROUTE)
# Kinds whose status this module writes, as (API group, plural): the
# ClusterRole's */status grants (tests/test_manifests.py checks them).
STATUS_RESOURCES: Mapping[str, str] = {
    GATEWAY_CLASS: "gatewayclasses",
    GATEWAY: "gateways",
    GRPC_ROUTE: "grpcroutes",
    HTTP_ROUTE: "httproutes",
}
# Listener findings that are about references (ResolvedRefs), not acceptance.
_LISTENER_REF_REASONS = frozenset({"InvalidCertificateRef", INVALID_ROUTE_KINDS, "RefNotPermitted"})
# The API validates condition messages up to 32 KiB; a status is read by people.
MAX_MESSAGE = 1024
_LISTENER_PREFIX = re.compile(r"^spec\.listeners\[(\d+)\]")
_PARENT_PREFIX = re.compile(r"^spec\.parentRefs\[(\d+)\]")

Lookup = Callable[[ir.ObjectRef], KubeObject | None]
Status = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Wanted:
    """One condition as we mean it; the time is added when merged."""

    type: str
    status: ir.ConditionStatus
    reason: str
    message: str


# ------------------------------------------------------------------ ownership


def gateway_is_ours(gateway: KubeObject, *, lookup: Lookup, controller: str) -> bool:
    """Whether `gateway`'s GatewayClass names `controller`."""
    ref = class_of(gateway)
    gateway_class = lookup(ref) if ref is not None else None
    return gateway_class is not None and class_is_ours(gateway_class, controller=controller)


def class_is_ours(gateway_class: KubeObject, *, controller: str) -> bool:
    spec = fields.mapping(gateway_class.body.get("spec"))
    return fields.text(spec.get("controllerName")) == controller


def class_of(gateway: KubeObject) -> ir.ObjectRef | None:
    """The GatewayClass `gateway` names."""
    class_name = fields.text(fields.mapping(gateway.body.get("spec")).get("gatewayClassName"))
    return ir.ObjectRef(kind=GATEWAY_CLASS, namespace="", name=class_name) if class_name else None


def merged_class_status(existing: Mapping[str, Any], *, generation: int, now: str) -> Status:
    """A GatewayClass of ours: Accepted (anything else in its status kept)."""
    accepted = Wanted(
        ACCEPTED, ir.ConditionStatus.TRUE, ACCEPTED, "xds-ingress serves Gateways of this class"
    )
    status: Status = plain(existing)
    status["conditions"] = merged_conditions(
        existing.get("conditions"), (accepted,), generation=generation, now=now
    )
    return status


def parent_refs(route: KubeObject) -> list[tuple[int, Mapping[str, Any], str, str]]:
    """(index, parentRef as written, namespace, name) of each parentRef naming a Gateway."""
    found = []
    for index, raw in enumerate(
        fields.items(fields.mapping(route.body.get("spec")).get("parentRefs"))
    ):
        parent = fields.mapping(raw)
        group = fields.text(parent.get("group"))
        kind = fields.text(parent.get("kind")) or GATEWAY
        if (group if group is not None else GATEWAY_GROUP) != GATEWAY_GROUP or kind != GATEWAY:
            continue
        namespace = fields.text(parent.get("namespace")) or route.namespace
        found.append((index, parent, namespace, fields.text(parent.get("name")) or ""))
    return found


# ------------------------------------------------------------------ routes


def route_parent_conditions(
    conditions: Sequence[ir.Condition], *, index: int
) -> tuple[Wanted, Wanted]:
    """(Accepted, ResolvedRefs) for the parentRef at `index`."""
    accepted = _pick(
        [
            condition
            for condition in conditions
            if condition.type == ACCEPTED and condition.status is ir.ConditionStatus.FALSE
        ],
        index=index,
        prefix=_PARENT_PREFIX,
    )
    unresolved = [
        condition
        for condition in conditions
        if condition.type == RESOLVED_REFS and condition.status is ir.ConditionStatus.FALSE
    ]
    return (
        _false(ACCEPTED, accepted)
        if accepted
        else Wanted(
            ACCEPTED, ir.ConditionStatus.TRUE, ACCEPTED, _true_message(conditions, ACCEPTED)
        ),
        _false(RESOLVED_REFS, unresolved)
        if unresolved
        else Wanted(
            RESOLVED_REFS,
            ir.ConditionStatus.TRUE,
            RESOLVED_REFS,
            _true_message(conditions, RESOLVED_REFS),
        ),
    )


def route_parents(
    route: KubeObject,
    *,
    conditions: Sequence[ir.Condition],
    ours: Callable[[str, str], bool],
    controller: str,
) -> list[tuple[Mapping[str, Any], tuple[Wanted, Wanted]]]:
    """Our parents entries for `route`: (parentRef, conditions), in spec order.

    Only parentRefs naming a Gateway of ours get one, and only if translate
    said something about the route (it is ours at all).
    """
    if not conditions:
        return []
    entries = []
    for index, parent, namespace, name in parent_refs(route):
        if ours(namespace, name):
            entries.append((parent, route_parent_conditions(conditions, index=index)))
    return entries


def merged_route_status(
    existing: Mapping[str, Any],
    wanted: Sequence[tuple[Mapping[str, Any], tuple[Wanted, Wanted]]],
    *,
    controller: str,
    generation: int,
    now: str,
) -> Status:
    """`existing` status with our parents entries replaced by `wanted`; others' kept."""
    old_parents = [fields.mapping(entry) for entry in fields.items(existing.get("parents"))]
    old_ours = {
        _parent_key(fields.mapping(entry.get("parentRef"))): entry
        for entry in old_parents
        if entry.get("controllerName") == controller
    }
    parents: list[Any] = [
        plain(entry) for entry in old_parents if entry.get("controllerName") != controller
    ]
    for parent_ref, conditions in wanted:
        old = old_ours.get(_parent_key(parent_ref), {})
        parents.append(
            {
                "parentRef": plain(parent_ref),
                "controllerName": controller,
                "conditions": merged_conditions(
                    old.get("conditions"), conditions, generation=generation, now=now
                ),
            }
        )
    status: Status = plain(existing)
    status["parents"] = parents
    return status


def has_parents_of(status: Mapping[str, Any], *, controller: str) -> bool:
    return any(
        fields.mapping(entry).get("controllerName") == controller
        for entry in fields.items(status.get("parents"))
    )


def _parent_key(parent: Mapping[str, Any]) -> tuple[object, ...]:
    return tuple(
        parent.get(field) for field in ("group", "kind", "namespace", "name", "sectionName", "port")
    )


# ------------------------------------------------------------------ gateways


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    index: int
    name: str
    port: int | None
    hostname: str | None
    namespaces: RouteNamespaces
    kinds: tuple[str, ...]  # route kinds we support that it takes, in spec order
    invalid_kinds: tuple[str, ...]  # route kinds it names that we do not serve


def listener_specs(gateway: KubeObject) -> list[ListenerSpec]:
    found = []
    for index, raw in enumerate(
        fields.items(fields.mapping(gateway.body.get("spec")).get("listeners"))
    ):
        listener = fields.mapping(raw)
        name = fields.text(listener.get("name"))
        if not name:
            continue
        allowed = fields.mapping(listener.get("allowedRoutes"))
        named = [
            (fields.text(entry.get("group")), fields.text(entry.get("kind")) or "")
            for entry in map(fields.mapping, fields.items(allowed.get("kinds")))
        ]
        served = [
            (group if group is not None else GATEWAY_GROUP) == GATEWAY_GROUP and kind in ROUTE_KINDS
            for group, kind in named
        ]
        # Without allowedRoutes.kinds, every route kind the protocol takes.
        kinds = (
            tuple(kind for (_, kind), ok in zip(named, served, strict=True) if ok)
            if named
            else ROUTE_KINDS
        )
        invalid = tuple(kind for (_, kind), ok in zip(named, served, strict=True) if not ok)
        hostname = listener.get("hostname")
        found.append(
            ListenerSpec(
                index=index,
                name=name,
                port=fields.port_number(listener.get("port")),
                hostname=hostname if isinstance(hostname, str) else None,
                namespaces=route_namespaces(allowed)[0],
                kinds=kinds,
                invalid_kinds=invalid,
            )
        )
    return found


@dataclass(frozen=True, slots=True)
class ListenerState:
    accepted: Wanted
    resolved_refs: Wanted
    programmed: Wanted
    usable: bool  # routes can attach to it

    def conditions(self) -> tuple[Wanted, Wanted, Wanted]:
        return (self.accepted, self.programmed, self.resolved_refs)


def listener_state(
    listener: ListenerSpec,
    gateway_conditions: Sequence[ir.Condition],
    *,
    nacked: Sequence[ir.Condition],
) -> ListenerState:
    """The conditions of one listener, from its Gateway's findings about it.

    translate reports a listener's problems on its Gateway, each message
    starting "spec.listeners[i] (name)"; by type (and, for Accepted, by
    reason) they become the listener's Accepted, ResolvedRefs and
    Programmed. `nacked`: Envoy rejected the Gateway's configuration.
    """
    mine = [
        condition
        for condition in gateway_conditions
        if condition.status is ir.ConditionStatus.FALSE
        and _index(condition.message, _LISTENER_PREFIX) == listener.index
    ]
    rejected = [c for c in mine if c.type == ACCEPTED and c.reason not in _LISTENER_REF_REASONS]
    refs = [
        c
        for c in mine
        if c.type == RESOLVED_REFS or (c.type == ACCEPTED and c.reason in _LISTENER_REF_REASONS)
    ]
    not_served = [c for c in mine if c.type == PROGRAMMED]
    accepted = (
        _false(ACCEPTED, rejected)
        if rejected
        else Wanted(ACCEPTED, ir.ConditionStatus.TRUE, ACCEPTED, "the listener is served")
    )
    if refs:
        resolved = _false(RESOLVED_REFS, refs)
    elif listener.invalid_kinds:
        resolved = Wanted(
            RESOLVED_REFS,
            ir.ConditionStatus.FALSE,
            INVALID_ROUTE_KINDS,
            "allowedRoutes.kinds: xds-ingress does not serve "
            + ", ".join(sorted(set(listener.invalid_kinds))),
        )
    else:
        resolved = Wanted(
            RESOLVED_REFS, ir.ConditionStatus.TRUE, RESOLVED_REFS, "every reference resolved"
        )
    usable = not rejected and not not_served and bool(listener.kinds)
    if not usable:
        why = [*rejected, *not_served]
        programmed = (
            _false(PROGRAMMED, why, reason=INVALID)
            if why
            else Wanted(
                PROGRAMMED, ir.ConditionStatus.FALSE, INVALID, "no route kind it allows is served"
            )
        )
    elif nacked:
        programmed = _false(PROGRAMMED, nacked, reason=INVALID)
    else:
        programmed = Wanted(
            PROGRAMMED, ir.ConditionStatus.TRUE, PROGRAMMED, "Envoy serves the listener"
        )
    return ListenerState(
        accepted=accepted, resolved_refs=resolved, programmed=programmed, usable=usable
    )


def attaches(
    listener: ListenerSpec,
    *,
    gateway: KubeObject,
    route: KubeObject,
    parent: Mapping[str, Any],
    labels: NamespaceLabels = no_labels,
) -> bool:
    """Whether an accepted parentRef of `route` attaches it to `listener`.

    `labels`: a namespace's labels, for a listener that selects namespaces.
    """
    section = fields.text(parent.get("sectionName"))
    port = fields.port_number(parent.get("port"))
    if section is not None and section != listener.name:
        return False
    if port is not None and port != listener.port:
        return False
    if route.kind not in listener.kinds:
        return False
    if not listener.namespaces.admits(
        route.namespace, gateway_namespace=gateway.namespace, labels=labels
    ):
        return False
    hostnames = [
        host
        for host in fields.items(fields.mapping(route.body.get("spec")).get("hostnames"))
        if isinstance(host, str)
    ]
    return bool(intersect_hostnames(listener.hostname, hostnames))


def attached_routes(
    gateway: KubeObject,
    listeners: Sequence[ListenerSpec],
    routes: Iterable[tuple[KubeObject, Sequence[ir.Condition]]],
    *,
    labels: NamespaceLabels = no_labels,
) -> dict[str, int]:
    """Listener name → how many routes are attached to it (accepted through a parentRef)."""
    attached: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
    for route, conditions in routes:
        if not conditions:
            continue
        for index, parent, namespace, name in parent_refs(route):
            if (namespace, name) != (gateway.namespace, gateway.name):
                continue
            accepted, _resolved = route_parent_conditions(conditions, index=index)
            if accepted.status is not ir.ConditionStatus.TRUE:
                continue
            for listener in listeners:
                if attaches(listener, gateway=gateway, route=route, parent=parent, labels=labels):
                    attached[listener.name].add((route.kind, route.namespace, route.name))
    return {name: len(keys) for name, keys in attached.items()}


def gateway_conditions(
    gateway_findings: Sequence[ir.Condition],
    listeners: Sequence[tuple[ListenerSpec, ListenerState]],
) -> tuple[Wanted, Wanted]:
    """(Accepted, Programmed) of the Gateway."""
    whole = [
        condition
        for condition in gateway_findings
        if condition.status is ir.ConditionStatus.FALSE
        and condition.type == ACCEPTED
        and _index(condition.message, _LISTENER_PREFIX) is None
    ]
    nacked = [
        condition
        for condition in gateway_findings
        if condition.status is ir.ConditionStatus.FALSE
        and condition.type == PROGRAMMED
        and _index(condition.message, _LISTENER_PREFIX) is None
    ]
    bad = [spec.name for spec, state in listeners if not state.usable]
    if whole:
        accepted = _false(ACCEPTED, whole)
    elif bad and len(bad) == len(listeners):
        accepted = Wanted(
            ACCEPTED,
            ir.ConditionStatus.FALSE,
            LISTENERS_NOT_VALID,
            "no listener can be served: " + ", ".join(bad),
        )
    elif bad:
        accepted = Wanted(
            ACCEPTED,
            ir.ConditionStatus.TRUE,
            LISTENERS_NOT_VALID,
            "some listeners cannot be served: " + ", ".join(bad),
        )
    else:
        accepted = Wanted(
            ACCEPTED, ir.ConditionStatus.TRUE, ACCEPTED, "the Gateway is served by xds-ingress"
        )
    if accepted.status is not ir.ConditionStatus.TRUE:
        programmed = Wanted(PROGRAMMED, ir.ConditionStatus.FALSE, INVALID, accepted.message)
    elif nacked:
        programmed = _false(PROGRAMMED, nacked, reason=INVALID)
    else:
        programmed = Wanted(
            PROGRAMMED, ir.ConditionStatus.TRUE, PROGRAMMED, "Envoy is configured for it"
        )
    return accepted, programmed


def merged_gateway_status(
    existing: Mapping[str, Any],
    *,
    conditions: tuple[Wanted, Wanted],
    listeners: Sequence[tuple[ListenerSpec, ListenerState]],
    attached: Mapping[str, int],
    generation: int,
    now: str,
) -> Status:
    """`existing` status with our conditions and listeners (anything else, e.g. addresses, kept)."""
    old_listeners = {
        fields.text(entry.get("name")): entry
        for entry in map(fields.mapping, fields.items(existing.get("listeners")))
    }
    status: Status = plain(existing)
    status["conditions"] = merged_conditions(
        existing.get("conditions"), conditions, generation=generation, now=now
    )
    status["listeners"] = [
        {
            "name": spec.name,
            "supportedKinds": [{"group": GATEWAY_GROUP, "kind": kind} for kind in spec.kinds],
            "attachedRoutes": attached.get(spec.name, 0),
            "conditions": merged_conditions(
                fields.mapping(old_listeners.get(spec.name)).get("conditions"),
                state.conditions(),
                generation=generation,
                now=now,
            ),
        }
        for spec, state in listeners
    ]
    return status


# ------------------------------------------------------------------ conditions


def merged_conditions(
    existing: object, wanted: Iterable[Wanted], *, generation: int, now: str
) -> list[dict[str, Any]]:
    """`wanted` as API conditions; lastTransitionTime kept where the status did not change."""
    old = {
        fields.text(entry.get("type")): entry
        for entry in map(fields.mapping, fields.items(existing))
    }
    merged = []
    for condition in wanted:
        previous = fields.mapping(old.get(condition.type))
        kept = previous.get("status") == condition.status.value and isinstance(
            previous.get("lastTransitionTime"), str
        )
        merged.append(
            {
                "type": condition.type,
                "status": condition.status.value,
                "reason": condition.reason,
                "message": condition.message[:MAX_MESSAGE],
                "observedGeneration": generation,
                "lastTransitionTime": previous["lastTransitionTime"] if kept else now,
            }
        )
    return merged


def generation(obj: KubeObject) -> int:
    value = fields.integer(obj.metadata.get("generation"))
    return value if value is not None else 0


def _index(message: str, prefix: re.Pattern[str]) -> int | None:
    found = prefix.match(message)
    return int(found.group(1)) if found else None


def _pick(
    conditions: Sequence[ir.Condition], *, index: int, prefix: re.Pattern[str]
) -> list[ir.Condition]:
    """The findings for item `index`, and those about the whole object."""
    return [c for c in conditions if _index(c.message, prefix) in (index, None)]


def _false(type: str, conditions: Sequence[ir.Condition], *, reason: str = "") -> Wanted:
    ordered = sorted(conditions)
    message = "; ".join(condition.message for condition in ordered)
    return Wanted(type, ir.ConditionStatus.FALSE, reason or ordered[0].reason, message)


def _true_message(conditions: Sequence[ir.Condition], type: str) -> str:
    for condition in conditions:
        if condition.type == type and condition.status is ir.ConditionStatus.TRUE:
            return condition.message
    return type


def plain(value: Any) -> Any:
    """A mutable JSON copy of a (possibly frozen) value."""
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value
