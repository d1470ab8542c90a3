"""h2load (Debian's nghttp2-client), a second HTTP/2 load generator, run and read.

h2load speaks HTTP/2, not gRPC: a call is a POST of one length-prefixed
message with gRPC's headers, and success is an HTTP 2xx (a gRPC error in
the trailers would not show; the data-plane scenario checks every target
with ghz first). Its text report gives throughput and the mean latency;
percentiles come from its per-request log (`--log-file`), and a fixed
request rate from `--rps` (per connection). Every run is bounded in time
(`-D`) and by a subprocess timeout.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.results import percentile
from xds_ingress.resources.encoded import varint


@dataclass(frozen=True, slots=True)
class H2loadResult:
    ok: int
    failed: int
    rps: float  # requests finished per second
    mean_ms: float
    non_2xx: int
    elapsed_s: float
    bytes_total: int
    cipher: str  # "" when not TLS
    # From the per-request log (NaN without one): successful requests only.
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    # Requests started together (see started_together), NaN without a log.
    started_together: float = math.nan


def binary() -> str:
    found = shutil.which("h2load")
    if found is None:
        raise FileNotFoundError("no h2load: apt-get install nghttp2-client (bench/install-deps.sh)")
    return found


def unary_request_frame(size: int, *, response_size: int | None = None) -> bytes:
    """A gRPC frame of grpc.testing.SimpleRequest{response_size, payload.body of `size` bytes}.

    The reply carries `response_size` bytes (default: `size`). Encoded by
    hand (two fields) so no generated code is needed for one message.
    """
    reply = size if response_size is None else response_size
    message = b"\x10" + varint(reply)  # SimpleRequest.response_size = 2
    return _frame(message + _payload_field(size))


def streaming_request_frame(size: int, messages: int) -> bytes:
    """A gRPC frame of grpc.testing.StreamingOutputCallRequest asking for `messages` replies.

    Each reply carries `size` bytes (ResponseParameters.size), as the
    request does (payload.body): what ghz.streaming_payload asks for.
    """
    parameters = b"\x08" + varint(size)  # ResponseParameters.size = 1
    # StreamingOutputCallRequest.response_parameters = 2, once per reply.
    message = (b"\x12" + varint(len(parameters)) + parameters) * messages
    return _frame(message + _payload_field(size))


def _payload_field(size: int) -> bytes:
    """Field 3 of both requests: a Payload whose body (field 2) is `size` zero bytes."""
    payload = b"\x12" + varint(size) + bytes(size)
    return b"\x1a" + varint(len(payload)) + payload


def _frame(message: bytes) -> bytes:
    """gRPC's length-prefixed message: not compressed, 4-byte big-endian length."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def run(
    *,
    address: str,
    authority: str,
    path: str,
    body: Path,
    seconds: float,
    clients: int,
    streams_per_client: int,
    threads: int = 1,
    tls: bool = False,
    requests: int = 0,
    cpus: Sequence[int] = (),
    rps_per_client: float = 0.0,
    log_path: Path | None = None,
    warmup_seconds: float = 0.0,
) -> H2loadResult:
    """Load on `clients` connections to `address` (HOST:PORT).

    Unthrottled, or `rps_per_client` requests per second on each
    connection. For `seconds`, or with `requests` for that many in all (then
    `seconds` only bounds the wait). `tls`: https, with `authority` as the
    SNI name. With `log_path`, p50/p99 are read from the per-request log,
    leaving out requests started in the first `warmup_seconds`.
    """
    argv = [
        binary(),
        "--connect-to",
        address,
        *(["-n", str(requests)] if requests else ["-D", f"{seconds:g}"]),
        "-c",
        str(clients),
        "-m",
        str(streams_per_client),
        "-t",
        str(threads),
        "-d",
        str(body),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        *([f"--rps={rps_per_client:g}"] if rps_per_client else []),
        *([f"--log-file={log_path}"] if log_path is not None else []),
        f"{'https' if tls else 'http'}://{authority}{path}",
    ]
    pinned = set(cpus)

    def pin() -> None:
        os.sched_setaffinity(0, pinned)

    completed = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
        preexec_fn=pin if pinned else None,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"h2load failed ({completed.returncode}): {completed.stderr[-2000:]}")
    result = parse(completed.stdout)
    if log_path is None:
        return result
    log = log_path.read_text()
    p50, p99 = latency_percentiles(log, warmup_seconds=warmup_seconds)
    together = started_together(log, warmup_seconds=warmup_seconds)
    return dataclasses.replace(result, p50_ms=p50, p99_ms=p99, started_together=together)


def latency_percentiles(log: str, *, warmup_seconds: float = 0.0) -> tuple[float, float]:
    """p50 and p99 in ms (nearest rank) of the 2xx requests in an h2load `--log-file`.

    (NaN, NaN) when none is left after the warm-up (see _log_rows).
    """
    durations = [
        duration / 1e3
        for _, status, duration in _log_rows(log, warmup_seconds)
        if 200 <= status < 300
    ]
    return percentile(durations, 50), percentile(durations, 99)


def _log_rows(log: str, warmup_seconds: float) -> list[tuple[int, int, int]]:
    """(start, status, duration) of the requests of an h2load `--log-file` after its warm-up.

    Its lines are tab-separated: start time (µs since the epoch), HTTP
    status (-1 for a request that failed), µs until the end of the
    response. Requests started within `warmup_seconds` of the first are
    left out, as ghz's --skipFirst does.
    """
    rows = [
        (int(start), int(status), int(duration))
        for start, status, duration in (
            line.split("\t") for line in log.splitlines() if line.strip()
        )
    ]
    if not rows:
        return []
    cutoff = min(row[0] for row in rows) + warmup_seconds * 1e6
    return [row for row in rows if row[0] >= cutoff]


# Starts closer than this belong to one burst: a call through a proxy here
# takes 30-60 µs of its CPU, so the later calls of a burst wait in its queue.
TOGETHER_US = 100


def started_together(log: str, *, warmup_seconds: float = 0.0) -> float:
    """How many requests of an h2load `--log-file` start together, on average per request.

    A burst is a run of starts each less than TOGETHER_US after the one
    before; the result is the mean burst size a request finds itself in
    (1.0: every request alone, as a paced load sends them). h2load's
    `--rps` releases requests on a coarse timer, so a fixed rate arrives as
    bursts: that is the load its 25% latencies are measured under.
    """
    kept = sorted(start for start, _, _ in _log_rows(log, warmup_seconds))
    if not kept:
        return math.nan
    sizes: list[int] = []
    size = 1
    for before, after in itertools.pairwise(kept):
        if after - before < TOGETHER_US:
            size += 1
        else:
            sizes.append(size)
            size = 1
    sizes.append(size)
    return sum(size * size for size in sizes) / len(kept)


def parse(text: str) -> H2loadResult:
    """h2load's text report → the numbers the benchmark uses."""
    finished = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", text)
    requests = re.search(
        r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        text,
    )
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    latency = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", text)
    if finished is None or requests is None or codes is None:
        raise ValueError(f"unexpected h2load output:\n{text[-2000:]}")
    mean_ms = float("nan")
    if latency is not None:
        scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[latency.group(2)]
        mean_ms = float(latency.group(1)) * scale
    succeeded, failed, errored, timeout = (int(requests.group(i)) for i in range(1, 5))
    non_2xx = sum(int(codes.group(i)) for i in range(2, 5))
    traffic = re.search(r"traffic: \S+ \((\d+)\) total", text)
    cipher = re.search(r"^Cipher: (\S+)", text, re.M)
    elapsed = float(finished.group(1)) * (1e-3 if finished.group(2) == "ms" else 1.0)
    return H2loadResult(
        ok=succeeded - non_2xx,
        failed=failed + errored + timeout + non_2xx,
        rps=float(finished.group(3)),
        mean_ms=mean_ms,
        non_2xx=non_2xx,
        elapsed_s=elapsed,
        bytes_total=int(traffic.group(1)) if traffic else 0,
        cipher=cipher.group(1) if cipher else "",
    )
