"""Steady gRPC load through the ingress, bounded in calls and in time, counting failures.

`SteadyLoad(target, authority)` runs a few workers, each with its own
long-lived channel (as real clients keep theirs), calling SayHello in a loop
with a short pause, until `stop()`, `max_calls` or `max_seconds`. Every
failed call is kept with its time and status, so a test can say "none
failed" or "none failed after the moment X".
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field

import grpc
from peers import wait_until

from xds_ingress.demo.v1 import greeter_pb2, greeter_pb2_grpc


@dataclass(frozen=True)
class Failure:
    started: float  # time.monotonic() when the call began
    at: float  # and when it failed
    code: str
    details: str


@dataclass
class LoadReport:
    ok: int = 0
    failures: list[Failure] = field(default_factory=list)
    backends: collections.Counter[str] = field(default_factory=collections.Counter)
    ok_times: list[float] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def failed_after(self, moment: float) -> list[Failure]:
        """Calls begun at or after `moment` that failed."""
        return [failure for failure in self.failures if failure.started >= moment]

    def ok_between(self, start: float, end: float) -> int:
        return sum(1 for at in self.ok_times if start <= at <= end)

    def first_ok_since(self, moment: float) -> float | None:
        """The monotonic time of the first successful call that ended at or after `moment`."""
        return next((at for at in self.ok_times if at >= moment), None)

    def summary(self) -> str:
        codes = collections.Counter(failure.code for failure in self.failures)
        return f"{self.ok} ok, {self.failed} failed {dict(codes)}; backends {dict(self.backends)}"


class SteadyLoad:
    def __init__(
        self,
        target: str,
        *,
        authority: str,
        workers: int = 4,
        pause_seconds: float = 0.01,
        max_calls: int = 50_000,
        max_seconds: float = 90.0,
        call_timeout: float = 2.0,
        fresh_channels: bool = False,
    ) -> None:
        self.target = target
        self.authority = authority
        self.workers = workers
        self.pause_seconds = pause_seconds
        self.max_calls = max_calls
        self.max_seconds = max_seconds
        self.call_timeout = call_timeout
        self.fresh_channels = fresh_channels
        self.report = LoadReport()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._calls = 0

    async def __aenter__(self) -> SteadyLoad:
        self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def start(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        self._tasks = [
            asyncio.create_task(self._worker(deadline), name=f"load-{index}")
            for index in range(self.workers)
        ]

    async def stop(self) -> LoadReport:
        self._stop.set()
        for task in self._tasks:
            await task
        self._tasks = []
        return self.report

    async def calls(self, count: int, *, within_seconds: float = 10.0) -> None:
        """Wait until `count` more calls have succeeded (the load is flowing)."""
        wanted = self.report.ok + count
        await wait_until(
            lambda: self.report.ok >= wanted,
            timeout=within_seconds,
            interval=0.02,
            message=f"{count} more successful calls ({self.report.summary()})",
        )

    async def _worker(self, deadline: float) -> None:
        options = [("grpc.default_authority", self.authority), ("grpc.enable_retries", 0)]
        channel: grpc.aio.Channel | None = None
        try:
            while (
                not self._stop.is_set()
                and self._calls < self.max_calls
                and time.monotonic() < deadline
            ):
                if channel is None:
                    channel = grpc.aio.insecure_channel(self.target, options=options)
                await self._call(greeter_pb2_grpc.GreeterStub(channel))
                if self.fresh_channels:
                    await channel.close(None)
                    channel = None
                await asyncio.sleep(self.pause_seconds)
        finally:
            if channel is not None:
                await channel.close(None)

    async def _call(self, stub: greeter_pb2_grpc.GreeterStub) -> None:
        self._calls += 1
        started = time.monotonic()
        try:
            reply = await stub.SayHello(
                greeter_pb2.HelloRequest(name="load"), timeout=self.call_timeout
            )
        except grpc.aio.AioRpcError as error:
            self.report.failures.append(
                Failure(
                    started=started,
                    at=time.monotonic(),
                    code=error.code().name,
                    details=error.details() or "",
                )
            )
        else:
            self.report.ok += 1
            self.report.ok_times.append(time.monotonic())
            self.report.backends[reply.backend] += 1
