"""h2load (Debian's nghttp2-client), a second HTTP/2 load generator, run and read.

h2load speaks HTTP/2, not gRPC: a call is a POST of one length-prefixed
message with gRPC's headers, and success is an HTTP 2xx (a gRPC error in
the trailers would not show; the data-plane scenario checks every target
with ghz first). It reports throughput and the mean latency, no
percentiles. Every run is bounded in time (`-D`) and by a subprocess
timeout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


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


def binary() -> str:
    found = shutil.which("h2load")
    if found is None:
        raise FileNotFoundError("no h2load: apt-get install nghttp2-client (bench/install-deps.sh)")
    return found


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def unary_request_frame(size: int, *, response_size: int | None = None) -> bytes:
    """A gRPC frame of grpc.testing.SimpleRequest{response_size, payload.body of `size` bytes}.

    The reply carries `response_size` bytes (default: `size`). Encoded by
    hand (two fields) so no generated code is needed for one message.
    """
    payload = b"\x12" + _varint(size) + bytes(size)  # Payload.body = 2
    reply = size if response_size is None else response_size
    message = b"\x10" + _varint(reply)  # SimpleRequest.response_size = 2
    message += b"\x1a" + _varint(len(payload)) + payload  # SimpleRequest.payload = 3
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
) -> H2loadResult:
    """Unthrottled load on `clients` connections to `address` (HOST:PORT).

    For `seconds`, or with `requests` for that many in all (then `seconds`
    only bounds the wait). `tls`: https, with `authority` as the SNI name.
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
    return parse(completed.stdout)


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
