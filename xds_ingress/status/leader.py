"""Which replica writes status: leader election on a coordination.k8s.io/v1 Lease.

Every replica serves xDS; only the Lease holder writes to Kubernetes, so two
replicas never fight over an Ingress's status or double every Event. The
algorithm is client-go's (tools/leaderelection):

- a Lease held by another replica counts as theirs until `lease_seconds`
  after we last saw it change (our clock only: replicas' clocks may differ);
- the holder renews every `retry_seconds`, and stops leading when it could
  not renew for `renew_seconds` (less than `lease_seconds`, so it stops
  before anyone else may start);
- others try to take it every `retry_seconds`; a write carries the
  resourceVersion read, so of two replicas racing, one gets 409 Conflict;
- on a clean stop the holder releases it (empty holder), and another
  replica takes over at its next try instead of waiting out the lease.

Calls are blocking (the `kubernetes` client) and run on the given executor.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import urllib3
from kubernetes.client import ApiClient, CoordinationV1Api
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseTiming:
    lease_seconds: float = 15.0
    renew_seconds: float = 10.0
    retry_seconds: float = 2.0


class LeaseError(Exception):
    """A Lease call failed; the next try repeats it."""


def micro_time(at: datetime | None = None) -> str:
    """A metav1.MicroTime as the API writes it."""
    return (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    def __init__(
        self,
        *,
        client: ApiClient,
        executor: concurrent.futures.Executor,
        namespace: str,
        name: str,
        identity: str,
        timing: LeaseTiming = LeaseTiming(),
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self._api = CoordinationV1Api(client)
        self._executor = executor
        self._timing = timing
        self._on_change = on_change
        self._leading = asyncio.Event()
        self._seen: tuple[str, str, str] | None = None  # holder, renewTime, resourceVersion
        self._seen_at = 0.0
        self._renewed_at = 0.0
        self.acquisitions = 0

    @property
    def leading(self) -> bool:
        return self._leading.is_set()

    async def wait_leading(self) -> None:
        await self._leading.wait()

    async def run(self) -> None:
        """Try, hold and renew the Lease until cancelled; then release it if held."""
        try:
            while True:
                try:
                    await self._try_once()
                except LeaseError as error:
                    log.warning("lease %s/%s: %s", self.namespace, self.name, error)
                if (
                    self.leading
                    and time.monotonic() - self._renewed_at > self._timing.renew_seconds
                ):
                    log.warning(
                        "lease %s/%s: not renewed for %gs; no longer writing status",
                        self.namespace,
                        self.name,
                        self._timing.renew_seconds,
                    )
                    self._set_leading(False)
                await asyncio.sleep(self._timing.retry_seconds)
        finally:
            if self.leading:
                self._set_leading(False)
                # Shielded: a cancelled stop must still hand the Lease over.
                await asyncio.shield(self._release())

    async def _try_once(self) -> None:
        lease = await self._call(self._read)
        now = time.monotonic()
        if lease is None:
            await self._call(self._create)
            self._acquired(now)
            return
        spec = _mapping(lease.get("spec"))
        metadata = _mapping(lease.get("metadata"))
        holder = str(spec.get("holderIdentity") or "")
        seen = (holder, str(spec.get("renewTime") or ""), str(metadata.get("resourceVersion")))
        if seen != self._seen:
            self._seen, self._seen_at = seen, now
        duration = float(spec.get("leaseDurationSeconds") or self._timing.lease_seconds)
        if holder and holder != self.identity and now < self._seen_at + duration:
            if self.leading:
                self._set_leading(False)  # someone took it while we could not renew
            return
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder != self.identity:
            transitions += 1
        acquire = spec.get("acquireTime") if holder == self.identity else micro_time()
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "resourceVersion": metadata.get("resourceVersion"),
            },
            "spec": self._spec(acquire_time=str(acquire), transitions=transitions),
        }
        await self._call(lambda: self._replace(body))
        self._acquired(now)

    def _acquired(self, now: float) -> None:
        self._renewed_at = now
        if not self.leading:
            log.info("lease %s/%s acquired by %s", self.namespace, self.name, self.identity)
            self.acquisitions += 1
            self._set_leading(True)

    def _set_leading(self, leading: bool) -> None:
        if leading:
            self._leading.set()
        else:
            self._leading.clear()
        if self._on_change is not None:
            self._on_change(leading)

    def _spec(self, *, acquire_time: str, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self._timing.lease_seconds)),
            "acquireTime": acquire_time,
            "renewTime": micro_time(),
            "leaseTransitions": transitions,
        }

    async def _release(self) -> None:
        try:
            lease = await self._call(self._read)
            if lease is None:
                return
            spec = _mapping(lease.get("spec"))
            if spec.get("holderIdentity") != self.identity:
                return
            body = {
                "metadata": {
                    "name": self.name,
                    "namespace": self.namespace,
                    "resourceVersion": _mapping(lease.get("metadata")).get("resourceVersion"),
                },
                "spec": {
                    **spec,
                    "holderIdentity": "",
                    "leaseDurationSeconds": 1,
                    "renewTime": micro_time(),
                },
            }
            await self._call(lambda: self._replace(body))
            log.info("lease %s/%s released by %s", self.namespace, self.name, self.identity)
        except LeaseError as error:
            log.warning("lease %s/%s not released: %s", self.namespace, self.name, error)

    # Blocking calls, run on the executor.

    async def _call(self, call: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _read(self) -> dict[str, Any] | None:
        try:
            response = self._api.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=10
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise LeaseError(f"read: {error.status} {error.reason}") from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise LeaseError(f"read: {error}") from None
        document: dict[str, Any] = json.loads(response.data)
        return document

    def _create(self) -> None:
        now = micro_time()
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": self._spec(acquire_time=now, transitions=0),
        }
        self._write(
            lambda: self._api.create_namespaced_lease(
                self.namespace, body, _preload_content=False, _request_timeout=10
            )
        )

    def _replace(self, body: Mapping[str, Any]) -> None:
        self._write(
            lambda: self._api.replace_namespaced_lease(
                self.name, self.namespace, body, _preload_content=False, _request_timeout=10
            )
        )

    @staticmethod
    def _write(call: Callable[[], object]) -> None:
        try:
            call()
        except ApiException as error:
            # 409: another replica wrote first; it is theirs this round.
            raise LeaseError(f"write: {error.status} {error.reason}") from None
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise LeaseError(f"write: {error}") from None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
