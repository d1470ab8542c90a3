"""Which Gateway API objects need their status written, and what it should say.

Fed every condition after each build (`update`); answers, for one object,
the status wanted given the status the API server has (`wanted`). Runs on
the event loop: it reads the source's copies of objects through `lookup`,
which is not thread-safe.

GatewayClasses are not translated: a class of ours is marked Accepted once
a Gateway of it is (translate's Gateway conditions lead to it), so a class
no Gateway uses yet keeps the API's default status ("Waiting for
controller").

A route that stops being ours (its parentRef now names another
controller's Gateway, or none) is remembered until its status has been
cleaned once, so our stale parents entry does not stay behind. What a
previous run left (the route changed, or its Gateway went, while no replica
was running) nobody remembers: given `routes`, every build also looks for
routes whose status still carries an entry of ours but that translate
said nothing about, and cleans those too. An entry of ours for a parentRef
the route no longer has, on a route still ours, goes with the next write
of its status (merged_route_status keeps only the entries we want).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping

from xds_ingress import ir
from xds_ingress.sources.objects import GATEWAY, GATEWAY_CLASS, NAMESPACE, KubeObject
from xds_ingress.status import gateway_api
from xds_ingress.status.gateway_api import Lookup, Status
from xds_ingress.status.rejections import REJECTED
from xds_ingress.translate import fields


class GatewayApiPlanner:
    def __init__(
        self,
        *,
        lookup: Lookup,
        controller: str,
        routes: Callable[[], Iterable[KubeObject]] | None = None,
    ) -> None:
        """`routes`: every GRPCRoute and HTTPRoute the source holds, for leftovers."""
        self.controller = controller
        self._lookup = lookup
        self._routes = routes
        self._conditions: dict[ir.ObjectRef, tuple[ir.Condition, ...]] = {}
        self._leaving: set[ir.ObjectRef] = set()

    def update(self, conditions: tuple[ir.Condition, ...]) -> None:
        by_object: dict[ir.ObjectRef, list[ir.Condition]] = defaultdict(list)
        for condition in conditions:
            if condition.object.kind in gateway_api.STATUS_RESOURCES:
                by_object[condition.object].append(condition)
        gone = self._conditions.keys() - by_object.keys()
        self._leaving |= {ref for ref in gone if ref.kind in gateway_api.ROUTE_KINDS}
        self._leaving |= self._leftovers(by_object.keys())
        self._leaving -= by_object.keys()
        self._conditions = {ref: tuple(found) for ref, found in by_object.items()}

    def _leftovers(self, known: Iterable[ir.ObjectRef]) -> set[ir.ObjectRef]:
        """Routes translate said nothing about whose status has an entry of ours."""
        if self._routes is None:
            return set()
        known = set(known)
        return {
            route.ref
            for route in self._routes()
            if route.ref not in known
            and gateway_api.has_parents_of(
                fields.mapping(route.body.get("status")), controller=self.controller
            )
        }

    def refs(self) -> list[ir.ObjectRef]:
        """Every object whose status may need writing: classes, then Gateways, then routes."""
        order = {GATEWAY_CLASS: 0, GATEWAY: 1}
        return sorted(
            self._conditions.keys() | self._leaving | self._classes(),
            key=lambda ref: (order.get(ref.kind, 2), ref),
        )

    def knows(self, ref: ir.ObjectRef) -> bool:
        if ref.kind == GATEWAY_CLASS:
            return ref in self._classes()
        return ref in self._conditions or ref in self._leaving

    def _classes(self) -> set[ir.ObjectRef]:
        """Our GatewayClasses translate reported on, and those of its Gateways."""
        found = set()
        for ref in self._conditions:
            if ref.kind == GATEWAY_CLASS:
                found.add(ref)
            elif ref.kind == GATEWAY:
                gateway = self._lookup(ref)
                class_ref = gateway_api.class_of(gateway) if gateway is not None else None
                if class_ref is not None:
                    found.add(class_ref)
        return found

    def written(self, ref: ir.ObjectRef) -> None:
        """`ref`'s status says what we want: a route that left needs nothing more."""
        self._leaving.discard(ref)

    def differs_in_store(self, ref: ir.ObjectRef) -> bool:
        """Whether the source's copy of `ref` says other than we want (cheap, no API call)."""
        obj = self._lookup(ref)
        if obj is None:
            return False
        existing = _status(obj)
        wanted = self.wanted(ref, existing=existing, now="")
        return wanted is not None and wanted != existing

    def wanted(
        self, ref: ir.ObjectRef, *, existing: Mapping[str, object], now: str
    ) -> Status | None:
        """The whole status `ref` should have, given `existing`; None: not ours to write."""
        obj = self._lookup(ref)
        if obj is None:
            return None
        if ref.kind == GATEWAY_CLASS:
            if not gateway_api.class_is_ours(obj, controller=self.controller):
                return None
            return gateway_api.merged_class_status(
                existing, generation=gateway_api.generation(obj), now=now
            )
        if ref.kind == GATEWAY:
            return self._gateway(obj, existing=existing, now=now)
        return self._route(obj, existing=existing, now=now)

    def _ours(self, namespace: str, name: str) -> bool:
        gateway = self._lookup(ir.ObjectRef(kind=GATEWAY, namespace=namespace, name=name))
        return gateway is not None and gateway_api.gateway_is_ours(
            gateway, lookup=self._lookup, controller=self.controller
        )

    def _gateway(
        self, gateway: KubeObject, *, existing: Mapping[str, object], now: str
    ) -> Status | None:
        if not gateway_api.gateway_is_ours(
            gateway, lookup=self._lookup, controller=self.controller
        ):
            return None
        findings = self._conditions.get(gateway.ref, ())
        nacked = [
            c
            for c in findings
            if c.type == gateway_api.PROGRAMMED
            and c.status is ir.ConditionStatus.FALSE
            and c.reason == REJECTED
        ]
        listeners = [
            (spec, gateway_api.listener_state(spec, findings, nacked=nacked))
            for spec in gateway_api.listener_specs(gateway)
        ]
        routes = []
        for ref, conditions in self._conditions.items():
            if ref.kind in gateway_api.ROUTE_KINDS:
                route = self._lookup(ref)
                if route is not None:
                    routes.append((route, conditions))
        attached = gateway_api.attached_routes(
            gateway,
            [spec for spec, state in listeners if state.usable],
            routes,
            labels=self._namespace_labels,
        )
        return gateway_api.merged_gateway_status(
            existing,
            conditions=gateway_api.gateway_conditions(findings, listeners),
            listeners=listeners,
            attached=attached,
            generation=gateway_api.generation(gateway),
            now=now,
        )

    def _namespace_labels(self, namespace: str) -> Mapping[str, str]:
        found = self._lookup(ir.ObjectRef(kind=NAMESPACE, namespace="", name=namespace))
        return found.labels if found is not None else {}

    def _route(
        self, route: KubeObject, *, existing: Mapping[str, object], now: str
    ) -> Status | None:
        wanted = gateway_api.route_parents(
            route,
            conditions=self._conditions.get(route.ref, ()),
            ours=self._ours,
            controller=self.controller,
        )
        if not wanted and not gateway_api.has_parents_of(existing, controller=self.controller):
            return None  # never ours, or cleaned already
        return gateway_api.merged_route_status(
            existing,
            wanted,
            controller=self.controller,
            generation=gateway_api.generation(route),
            now=now,
        )


def _status(obj: KubeObject) -> Status:
    status = obj.body.get("status")
    return gateway_api.plain(status) if isinstance(status, Mapping) else {}
