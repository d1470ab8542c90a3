"""ghz, the gRPC load generator (built by bench/install-deps.sh), run and read.

Every run is bounded in count (`-n`) and in time (`-x`, plus a hard
subprocess timeout). ghz ends a time-bounded run by closing its
connections, which fails the few calls then in flight with "client
connection is closing" or "transport is closing": those are counted as
`cut`, apart from real errors.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import repo_tool

PROTO = Path(__file__).resolve().parent / "protos" / "test_service.proto"
UNARY_CALL = "grpc.testing.TestService.UnaryCall"
STREAMING_CALL = "grpc.testing.TestService.StreamingOutputCall"
_CUT_MARKERS = ("client connection is closing", "transport is closing")


@dataclass(frozen=True, slots=True)
class Load:
    """How hard to push: `rps` 0 means as fast as the target answers."""

    seconds: float
    max_calls: int
    concurrency: int
    connections: int
    rps: int = 0
    skip_first: int = 0


@dataclass(frozen=True, slots=True)
class GhzResult:
    ok: int
    errors: int
    cut: int
    rps: float  # OK calls per second over the whole run
    p50_ms: float
    p99_ms: float
    error_kinds: tuple[str, ...]
    # Every OK call's latency in ms, in the order ghz reported them (its
    # per-call details, after --skipFirst): for percentiles over several runs.
    latencies_ms: tuple[float, ...] = ()


def unary_payload(size: int) -> str:
    body = base64.b64encode(bytes(size)).decode()
    return json.dumps({"response_size": size, "payload": {"body": body}})


def streaming_payload(size: int, messages: int) -> str:
    """A StreamingOutputCall asking for `messages` replies of `size` bytes each."""
    body = base64.b64encode(bytes(size)).decode()
    return json.dumps(
        {
            "response_parameters": [{"size": size} for _ in range(messages)],
            "payload": {"body": body},
        }
    )


def binary() -> Path:
    found = repo_tool("ghz")
    if found is None:
        raise FileNotFoundError("no ghz: run bench/install-deps.sh")
    return found


def run(
    *,
    target: str,
    load: Load,
    payload_bytes: int,
    authority: str | None = None,
    cpus: int = 1,
    call: str = UNARY_CALL,
    data: str | None = None,
) -> GhzResult:
    """`data`: the request as JSON (default: a UnaryCall of `payload_bytes`)."""
    argv = [
        str(binary()),
        "--insecure",
        "--proto",
        str(PROTO),
        "--call",
        call,
        "-d",
        unary_payload(payload_bytes) if data is None else data,
        "-n",
        str(load.max_calls),
        "-x",
        f"{load.seconds}s",
        "-c",
        str(load.concurrency),
        "--connections",
        str(load.connections),
        "--cpus",
        str(cpus),
        "-O",
        "json",
    ]
    if load.rps:
        argv += ["--rps", str(load.rps)]
    if load.skip_first:
        argv += ["--skipFirst", str(load.skip_first)]
    if authority is not None:
        argv += ["--authority", authority]
    argv.append(target)
    completed = subprocess.run(
        argv, capture_output=True, text=True, timeout=load.seconds + 30, check=False
    )
    if completed.returncode != 0 or not completed.stdout.strip():
        raise RuntimeError(f"ghz failed ({completed.returncode}): {completed.stderr[-2000:]}")
    return parse(json.loads(completed.stdout))


def parse(report: Mapping[str, Any]) -> GhzResult:
    """ghz's JSON report (-O json) → the numbers the benchmark uses."""
    codes: Mapping[str, int] = report.get("statusCodeDistribution") or {}
    errors_by_text: Mapping[str, int] = report.get("errorDistribution") or {}
    ok = int(codes.get("OK", 0))
    cut = sum(
        int(count)
        for text, count in errors_by_text.items()
        if any(marker in text for marker in _CUT_MARKERS)
    )
    failed = sum(int(count) for code, count in codes.items() if code != "OK")
    latencies = {
        int(entry["percentage"]): float(entry["latency"]) / 1e6
        for entry in report.get("latencyDistribution") or []
    }
    total_ns = float(report["total"])
    return GhzResult(
        ok=ok,
        errors=failed - cut,
        cut=cut,
        rps=ok / (total_ns / 1e9) if total_ns else 0.0,
        p50_ms=latencies.get(50, float("nan")),
        p99_ms=latencies.get(99, float("nan")),
        error_kinds=tuple(
            sorted(text for text in errors_by_text if not any(m in text for m in _CUT_MARKERS))
        ),
        latencies_ms=tuple(
            float(detail["latency"]) / 1e6
            for detail in report.get("details") or []
            if detail.get("status") == "OK"
        ),
    )
