"""A route reaches Envoy only once its cluster is warm, and leaves before its cluster does.

A prober calls a host in a tight loop while an Ingress rule for it (to a new
Service with a live backend) is added, then removed with its Service. What a
client may see is "not found" (404, UNIMPLEMENTED) until the first success
and success after it; on removal, the reverse. UNAVAILABLE (Envoy's 503
`no_cluster`: a route naming a cluster still warming, or already gone) must
never appear. Both xDS variants, through a real Envoy.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
import pytest
from ingress_harness import Ingress, endpoint_slice, ingress, routes_to, rule, service

from xds_ingress.demo.backend import GreeterBackend
from xds_ingress.demo.v1 import greeter_pb2, greeter_pb2_grpc

pytestmark = pytest.mark.timeout(180)

NOT_FOUND = grpc.StatusCode.UNIMPLEMENTED
OK = grpc.StatusCode.OK
# Rounds of add-then-remove per variant: the race this guards against showed
# on about a third of new routes, so a few rounds fail reliably without the fix.
ROUNDS = 5
# Answers of the final kind a probe waits for after the switch.
SETTLED_ANSWERS = 20
# Bounds of one probe, whatever happens.
MAX_CALLS = 5000
MAX_SECONDS = 20.0


@dataclass(frozen=True)
class Answer:
    code: grpc.StatusCode
    backend: str | None


def runs(answers: Sequence[Answer]) -> str:
    """`answers` as runs, e.g. "UNIMPLEMENTED x12, UNAVAILABLE x3, OK(b) x20"."""
    parts = []
    for (code, backend), group in itertools.groupby(answers, lambda a: (a.code, a.backend)):
        label = code.name if backend is None else f"{code.name}({backend})"
        parts.append(f"{label} x{len(list(group))}")
    return ", ".join(parts)


async def probe(
    target: str,
    authority: str,
    *,
    started: asyncio.Event,
    done: Callable[[Sequence[Answer]], bool],
) -> list[Answer]:
    """Call `authority` back to back until `done`, or the call or time bound is hit."""
    answers: list[Answer] = []
    options = [("grpc.default_authority", authority), ("grpc.enable_retries", 0)]
    deadline = time.monotonic() + MAX_SECONDS
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = greeter_pb2_grpc.GreeterStub(channel)
        request = greeter_pb2.HelloRequest(name="probe")
        while len(answers) < MAX_CALLS and time.monotonic() < deadline:
            try:
                reply = await stub.SayHello(request, timeout=2.0)
                answers.append(Answer(OK, str(reply.backend)))
            except grpc.aio.AioRpcError as error:
                answers.append(Answer(error.code(), None))
            started.set()
            if done(answers):
                break
    return answers


def switches_once(answers: Sequence[Answer], before: Answer, after: Answer) -> bool:
    """`answers` is some `before`, then only `after` (at least one of each)."""
    switch = next((i for i, a in enumerate(answers) if a != before), len(answers))
    return 0 < switch < len(answers) and all(a == after for a in answers[switch:])


def settled_on(kind: Answer) -> Callable[[Sequence[Answer]], bool]:
    def done(answers: Sequence[Answer]) -> bool:
        return sum(1 for a in answers[-SETTLED_ANSWERS:] if a == kind) >= SETTLED_ANSWERS

    return done


async def probed_while(
    under_test: Ingress, authority: str, change: Callable[[], None], final: Answer
) -> list[Answer]:
    """Probe `authority`, make `change` once the probe has an answer, probe until `final`."""
    started = asyncio.Event()
    prober = asyncio.create_task(
        probe(under_test.target, authority, started=started, done=settled_on(final))
    )
    try:
        await asyncio.wait_for(started.wait(), timeout=10)
    finally:
        if not started.is_set():
            prober.cancel()
    change()
    return await prober


async def test_new_routes_wait_for_their_clusters_and_go_before_them(
    ingress_under_test: Ingress, backends: dict[str, GreeterBackend]
) -> None:
    config = ingress_under_test.config
    config.write(
        "base.yaml",
        service("base"),
        endpoint_slice("base", backends["a"].port),
        ingress("base", [rule("base.example.com", ("/", "Prefix", "base"))]),
    )
    await ingress_under_test.start()
    await routes_to(ingress_under_test, "base.example.com", "a")

    not_found = Answer(NOT_FOUND, None)
    failures: list[str] = []
    for round_ in range(ROUNDS):
        backend = "bcd"[round_ % 3]
        name = f"new-{round_}"
        host = f"{name}.example.com"
        served = Answer(OK, backend)

        def add(name: str = name, host: str = host, backend: str = backend) -> None:
            config.write(
                f"{name}.yaml",
                service(name),
                endpoint_slice(name, backends[backend].port),
                ingress(name, [rule(host, ("/", "Prefix", name))]),
            )

        added = await probed_while(ingress_under_test, host, add, served)
        if not switches_once(added, not_found, served):
            failures.append(f"adding {host}: {runs(added)}")

        def remove(name: str = name) -> None:
            config.remove(f"{name}.yaml")

        removed = await probed_while(ingress_under_test, host, remove, not_found)
        if not switches_once(removed, served, not_found):
            failures.append(f"removing {host}: {runs(removed)}")

    assert not failures, "\n".join(failures)
    # The routes that stayed were never disturbed.
    await routes_to(ingress_under_test, "base.example.com", "a")
