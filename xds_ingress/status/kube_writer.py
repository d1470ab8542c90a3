"""Status written back to Kubernetes, off the pipeline's path.

`update` (the StatusSink the status stage calls after every build and NACK)
only compares and queues keys; a background task does the writing through
the `kubernetes` client on worker threads, and only while this replica holds
the Lease (leader.py). Three kinds of write:

- Ingress status.loadBalancer.ingress, from the --publish-service Service
  (polled). Written only when it differs: first from the object the source
  already holds, then from a fresh read, so our own write coming back through
  the watch costs one comparison, never another write.
- Gateway API status: our GatewayClasses' Accepted, a Gateway's conditions
  and listeners (for Gateways of our GatewayClasses), and our entries in a
  GRPCRoute's or HTTPRoute's status.parents (other controllers' entries
  are left as they are); planned by gateway_planner.py, compared first
  against the source's copy, then read fresh and merge-patched with that
  read's resourceVersion, so a concurrent write by another controller is a
  409 and a retry, never lost.
- core/v1 Events (type Warning) for every False condition, including NACKs
  (Programmed/Rejected). One per distinct condition: the Event's name is a
  hash of it, so a rebuild, a restart or a new leader finds it already there
  (409) instead of writing it again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import urllib3
from kubernetes.client import (
    ApiClient,
    Configuration,
    CoreV1Api,
    CustomObjectsApi,
    NetworkingV1Api,
)
from kubernetes.client.exceptions import ApiException

from xds_ingress import ir
from xds_ingress.sources.objects import GATEWAY_GROUP, KubeObject
from xds_ingress.status.addresses import (
    Addresses,
    ingress_addresses,
    service_addresses,
    status_patch,
)
from xds_ingress.status.gateway_api import STATUS_RESOURCES
from xds_ingress.status.gateway_planner import GatewayApiPlanner
from xds_ingress.status.leader import LeaseElector, LeaseTiming, micro_time
from xds_ingress.status.pending import Pending
from xds_ingress.translate.settings import DEFAULT_CONTROLLER_NAME

log = logging.getLogger(__name__)

T = TypeVar("T")
INGRESS = "Ingress"
COMPONENT = "xds-ingress"
# The API refuses a longer Event message.
MAX_EVENT_MESSAGE = 1024

# The object as the source holds it now (its body carries the uid and status).
Lookup = Callable[[ir.ObjectRef], KubeObject | None]


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusSettings:
    # "namespace/name" of the Envoy Service whose addresses Ingresses publish;
    # None: no Ingress status is written (Events still are).
    publish_service: tuple[str, str] | None
    lease_namespace: str
    lease_name: str = "xds-ingress-status"
    identity: str
    timing: LeaseTiming = field(default_factory=LeaseTiming)
    poll_seconds: float = 10.0
    capacity: int = 10_000
    # The GatewayClass controllerName, and our parents entries' controllerName.
    controller_name: str = DEFAULT_CONTROLLER_NAME


class WriteError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class _IngressKey:
    ref: ir.ObjectRef


@dataclass(frozen=True, slots=True)
class _EventKey:
    condition: ir.Condition


@dataclass(frozen=True, slots=True)
class _GatewayApiKey:
    ref: ir.ObjectRef


_Key = _IngressKey | _EventKey | _GatewayApiKey
# The Gateway API version whose status we read and write.
GATEWAY_API_VERSION = "v1"


class KubeStatusWriter:
    """Implements status.StatusSink; `run` writes until cancelled."""

    def __init__(
        self,
        *,
        configuration: Configuration,
        settings: StatusSettings,
        lookup: Lookup,
        routes: Callable[[], Iterable[KubeObject]] | None = None,
    ) -> None:
        """`routes`: every GRPCRoute and HTTPRoute held, to clean entries an earlier run left."""
        self.settings = settings
        self._configuration = copy.deepcopy(configuration)
        self._lookup = lookup
        self._pending: Pending[_Key] = Pending(capacity=settings.capacity)
        self._gateway_api = GatewayApiPlanner(
            lookup=lookup, controller=settings.controller_name, routes=routes
        )
        self._ingresses: frozenset[ir.ObjectRef] = frozenset()
        self._warnings: frozenset[ir.Condition] = frozenset()
        self._emitted: set[ir.Condition] = set()
        self._addresses: Addresses | None = None  # None: not read yet
        self.elector: LeaseElector | None = None
        self.status_writes = 0
        self.gateway_api_writes = 0
        self.events_created = 0

    @property
    def leading(self) -> bool:
        return self.elector is not None and self.elector.leading

    # ------------------------------------------------------------ the sink

    def update(
        self, *, ingresses: frozenset[ir.ObjectRef], conditions: tuple[ir.Condition, ...]
    ) -> None:
        self._ingresses = ingresses
        self._warnings = frozenset(
            c for c in conditions if c.status is ir.ConditionStatus.FALSE and c.object.namespace
        )
        # A condition that went away may come back later: it is news again.
        self._emitted &= self._warnings
        self._gateway_api.update(conditions)
        if self.leading:
            self._queue_all()

    def _queue_all(self) -> None:
        if self._addresses is not None:
            for ref in sorted(self._ingresses):
                if self._differs_in_store(ref):
                    self._pending.put(_IngressKey(ref))
        for ref in self._gateway_api.refs():
            if self._gateway_api.differs_in_store(ref):
                self._pending.put(_GatewayApiKey(ref))
        for condition in sorted(self._warnings - self._emitted):
            self._pending.put(_EventKey(condition))

    def _differs_in_store(self, ref: ir.ObjectRef) -> bool:
        obj = self._lookup(ref)
        return obj is not None and ingress_addresses(obj.body) != self._addresses

    def _leadership(self, leading: bool) -> None:
        self._pending.clear()
        if not leading:
            # Read again once leading again: it may change meanwhile.
            self._addresses = None
        else:
            # A new leader checks everything once: the last one may have
            # died between a change and its write.
            self._emitted.clear()
            self._queue_all()

    # ------------------------------------------------------------ the writer

    async def run(self) -> None:
        executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="kube-status"
        )
        client = ApiClient(self._configuration)
        self._core = CoreV1Api(client)
        self._networking = NetworkingV1Api(client)
        self._custom = CustomObjectsApi(client)
        self._executor = executor
        self.elector = LeaseElector(
            client=client,
            executor=executor,
            namespace=self.settings.lease_namespace,
            name=self.settings.lease_name,
            identity=self.settings.identity,
            timing=self.settings.timing,
            on_change=self._leadership,
        )
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.elector.run(), name="status-lease")
                group.create_task(self._work(), name="status-writes")
                if self.settings.publish_service is not None:
                    group.create_task(self._poll_publish_service(), name="status-publish")
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            client.close()

    async def _work(self) -> None:
        assert self.elector is not None
        while True:
            await self.elector.wait_leading()
            key = await self._pending.get()
            if not self.leading:
                continue  # queued before we lost the Lease; the next leader redoes it
            try:
                if isinstance(key, _IngressKey):
                    await self._write_ingress(key.ref)
                elif isinstance(key, _GatewayApiKey):
                    await self._write_gateway_api(key.ref)
                else:
                    await self._create_event(key.condition)
            except WriteError as error:
                log.warning("status not written: %s", error)
                await asyncio.sleep(self.settings.timing.retry_seconds)
                self._requeue(key)

    def _requeue(self, key: _Key) -> None:
        if isinstance(key, _IngressKey) and key.ref in self._ingresses:
            self._pending.put(key)
        elif isinstance(key, _GatewayApiKey) and self._gateway_api.knows(key.ref):
            self._pending.put(key)
        elif isinstance(key, _EventKey) and key.condition in self._warnings:
            self._pending.put(key)

    async def _poll_publish_service(self) -> None:
        assert self.elector is not None and self.settings.publish_service is not None
        namespace, name = self.settings.publish_service
        while True:
            await self.elector.wait_leading()
            try:
                service = await self._call(lambda: self._read_service(namespace, name))
            except WriteError as error:
                log.warning("--publish-service %s/%s: %s", namespace, name, error)
            else:
                addresses = service_addresses(service) if service is not None else None
                if service is None:
                    log.warning("--publish-service %s/%s not found", namespace, name)
                if addresses != self._addresses:
                    self._addresses = addresses
                    if addresses is not None:
                        log.info("Ingresses publish %s", _shown(addresses))
                        self._queue_all()
            await asyncio.sleep(self.settings.poll_seconds)

    async def _call(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    # Blocking calls, on the executor.

    def _read_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        with _api_errors(f"read Service {namespace}/{name}"):
            try:
                response = self._core.read_namespaced_service(
                    name, namespace, _preload_content=False, _request_timeout=10
                )
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
            document: dict[str, Any] = json.loads(response.data)
            return document

    # What the writes want is read here, on the event loop (the store is
    # not thread-safe); only the API calls run on the executor.

    async def _write_ingress(self, ref: ir.ObjectRef) -> None:
        wanted = self._addresses
        if wanted is None or ref not in self._ingresses:
            return
        if await self._call(lambda: self._patch_ingress(ref, wanted)):
            self.status_writes += 1
            log.info(
                "Ingress %s/%s: status.loadBalancer %s", ref.namespace, ref.name, _shown(wanted)
            )

    async def _create_event(self, condition: ir.Condition) -> None:
        if condition not in self._warnings or condition in self._emitted:
            return
        obj = self._lookup(condition.object)
        if obj is None:
            return  # gone: nothing to attach it to
        body = event_body(condition, obj=obj, identity=self.settings.identity)
        if await self._call(lambda: self._post_event(condition.object.namespace, body)):
            self.events_created += 1
        if condition in self._warnings:
            self._emitted.add(condition)

    async def _write_gateway_api(self, ref: ir.ObjectRef) -> None:
        if not self._gateway_api.knows(ref):
            return
        current = await self._call(lambda: self._read_custom_status(ref))
        if current is None:
            return  # deleted meanwhile
        existing = current.get("status")
        existing = existing if isinstance(existing, dict) else {}
        now = micro_time().split(".")[0] + "Z"  # metav1.Time has whole seconds
        wanted = self._gateway_api.wanted(ref, existing=existing, now=now)
        if wanted is None or wanted == existing:
            self._gateway_api.written(ref)
            return
        metadata = current.get("metadata")
        version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
        patch = {"metadata": {"resourceVersion": version}, "status": wanted}
        await self._call(lambda: self._patch_custom_status(ref, patch))
        self.gateway_api_writes += 1
        self._gateway_api.written(ref)
        log.info("%s: status written", ref)

    def _read_custom_status(self, ref: ir.ObjectRef) -> dict[str, Any] | None:
        with _api_errors(f"read {ref} status"):
            try:
                if not ref.namespace:  # a GatewayClass
                    response = self._custom.get_cluster_custom_object_status(
                        GATEWAY_GROUP,
                        GATEWAY_API_VERSION,
                        STATUS_RESOURCES[ref.kind],
                        ref.name,
                        _preload_content=False,
                        _request_timeout=10,
                    )
                else:
                    response = self._custom.get_namespaced_custom_object_status(
                        GATEWAY_GROUP,
                        GATEWAY_API_VERSION,
                        ref.namespace,
                        STATUS_RESOURCES[ref.kind],
                        ref.name,
                        _preload_content=False,
                        _request_timeout=10,
                    )
            except ApiException as error:
                if error.status == 404:
                    return None
                raise
            document: dict[str, Any] = json.loads(response.data)
            return document

    def _patch_custom_status(self, ref: ir.ObjectRef, patch: dict[str, Any]) -> None:
        # A merge patch replaces each list it names whole; the resourceVersion
        # makes it fail (409) if the object changed since it was read.
        with _api_errors(f"{ref} status"):
            if not ref.namespace:  # a GatewayClass
                self._custom.patch_cluster_custom_object_status(
                    GATEWAY_GROUP,
                    GATEWAY_API_VERSION,
                    STATUS_RESOURCES[ref.kind],
                    ref.name,
                    patch,
                    _content_type="application/merge-patch+json",
                    _preload_content=False,
                    _request_timeout=10,
                )
            else:
                self._custom.patch_namespaced_custom_object_status(
                    GATEWAY_GROUP,
                    GATEWAY_API_VERSION,
                    ref.namespace,
                    STATUS_RESOURCES[ref.kind],
                    ref.name,
                    patch,
                    _content_type="application/merge-patch+json",
                    _preload_content=False,
                    _request_timeout=10,
                )

    def _patch_ingress(self, ref: ir.ObjectRef, wanted: Addresses) -> bool:
        """True if written; False if it already said `wanted`, or is gone."""
        with _api_errors(f"Ingress {ref.namespace}/{ref.name}"):
            try:
                response = self._networking.read_namespaced_ingress_status(
                    ref.name, ref.namespace, _preload_content=False, _request_timeout=10
                )
            except ApiException as error:
                if error.status == 404:
                    return False  # deleted meanwhile
                raise
            if ingress_addresses(json.loads(response.data)) == wanted:
                return False  # our source's copy was behind; nothing to write
            self._networking.patch_namespaced_ingress_status(
                ref.name,
                ref.namespace,
                status_patch(wanted),
                _preload_content=False,
                _request_timeout=10,
            )
        return True

    def _post_event(self, namespace: str, body: dict[str, Any]) -> bool:
        """True if created; False if it exists (told already, by us or a previous leader)."""
        with _api_errors(f"Event {body['metadata']['name']}"):
            try:
                self._core.create_namespaced_event(
                    namespace, body, _preload_content=False, _request_timeout=10
                )
            except ApiException as error:
                if error.status == 409:
                    return False
                raise
        return True


def event_body(condition: ir.Condition, *, obj: KubeObject, identity: str) -> dict[str, Any]:
    ref = condition.object
    now = micro_time().split(".")[0] + "Z"  # metav1.Time has whole seconds
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name(condition), "namespace": ref.namespace},
        "involvedObject": {
            "apiVersion": obj.api_version,
            "kind": ref.kind,
            "namespace": ref.namespace,
            "name": ref.name,
            # kubectl describe finds an object's Events by its uid too.
            "uid": str(obj.metadata.get("uid") or ""),
        },
        "type": "Warning",
        "reason": condition.reason,
        "message": condition.message[:MAX_EVENT_MESSAGE],
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": identity,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }


def event_name(condition: ir.Condition) -> str:
    """Stable per distinct condition, so the same finding is one Event."""
    ref = condition.object
    digest = hashlib.blake2b(
        "\0".join(
            (ref.kind, ref.namespace, ref.name, condition.type, condition.reason, condition.message)
        ).encode(),
        digest_size=8,
    ).hexdigest()
    return f"{ref.name[:200]}.{digest}"


def _shown(addresses: Addresses) -> str:
    return ", ".join(ip or hostname for ip, hostname in addresses) or "(none)"


@contextlib.contextmanager
def _api_errors(what: str) -> Iterator[None]:
    """The client's failures as one WriteError naming what was written."""
    try:
        yield
    except ApiException as error:
        raise WriteError(f"{what}: {error.status} {error.reason}") from None
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise WriteError(f"{what}: {error}") from None
