"""The benchmark reads h2load's report and per-request log: a misread would
publish wrong figures, so the parsers are checked on real output shapes."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pytest
from grpc_tools import protoc

from bench import ghz, h2load

# h2load 1.52's report for 4 connections (nghttp2-client, Debian bookworm).
REPORT = """\
starting benchmark...
spawning thread #0: 4 total client(s). 4000 total requests
Application protocol: h2c
progress: 10% done

finished in 1.02s, 3921.57 req/s, 770.21KB/s
requests: 4000 total, 4000 started, 4000 done, 3990 succeeded, 10 failed, 0 errored, 0 timeout
status codes: 3990 2xx, 0 3xx, 6 4xx, 0 5xx
traffic: 785.45KB (804303) total, 41.23KB (42219) headers (space savings 92.50%), \
640.63KB (656000) data
                     min         max         mean         sd        +/- sd
time for request:      101us      3.21ms       812us       190us    70.12%
time for connect:       95us       152us       120us        23us    75.00%
time to 1st byte:      2.01ms      2.20ms      2.10ms        80us    50.00%
req/s           :     980.12     985.40     982.77        2.17    50.00%
"""


def test_report_counts_4xx_as_failed_and_reads_rate_and_mean() -> None:
    result = h2load.parse(REPORT)
    assert result.rps == pytest.approx(3921.57)
    assert result.non_2xx == 6
    assert result.ok == 3990 - 6
    assert result.failed == 10 + 6
    assert result.mean_ms == pytest.approx(0.812)
    assert result.elapsed_s == pytest.approx(1.02)
    assert result.bytes_total == 804303
    assert result.cipher == ""
    assert math.isnan(result.p99_ms)  # no log given


def test_report_in_milliseconds_and_with_tls() -> None:
    text = REPORT.replace("finished in 1.02s", "finished in 850.5ms").replace(
        "Application protocol: h2c", "TLS Protocol: TLSv1.3\nCipher: TLS_AES_128_GCM_SHA256"
    )
    result = h2load.parse(text)
    assert result.elapsed_s == pytest.approx(0.8505)
    assert result.cipher == "TLS_AES_128_GCM_SHA256"


def test_unexpected_report_is_an_error_not_zeroes() -> None:
    with pytest.raises(ValueError, match="unexpected h2load output"):
        h2load.parse("connect failed\n")


def test_log_percentiles_skip_warmup_and_failures() -> None:
    start = 1_700_000_000_000_000
    lines = [f"{start}\t200\t900000"]  # warm-up: left out
    # 100 requests after the warm-up: 1 ms ... 100 ms.
    lines += [f"{start + 600_000 + i}\t200\t{(i + 1) * 1000}" for i in range(100)]
    lines += [f"{start + 700_000}\t-1\t5000000", f"{start + 700_001}\t503\t4000000"]
    p50, p99 = h2load.latency_percentiles("\n".join(lines) + "\n", warmup_seconds=0.5)
    assert p50 == pytest.approx(50.0)
    assert p99 == pytest.approx(99.0)


def test_log_without_successes_gives_nan() -> None:
    p50, p99 = h2load.latency_percentiles("1700000000000000\t-1\t10\n")
    assert math.isnan(p50) and math.isnan(p99)
    assert all(math.isnan(v) for v in h2load.latency_percentiles(""))


def test_calls_started_together_counts_bursts_not_a_steady_rate() -> None:
    start = 1_700_000_000_000_000
    # Paced: one call every 250 µs (4000/s), each alone.
    paced = [f"{start + 600_000 + 250 * i}\t200\t300" for i in range(40)]
    assert h2load.started_together("\n".join(paced)) == 1.0
    # h2load's --rps: 8 calls 5 µs apart every 8 ms, and a warm-up burst of
    # 32 left out.
    warmup = [f"{start + 5 * i}\t200\t300" for i in range(32)]
    bursts = [
        f"{start + 600_000 + 8000 * burst + 5 * i}\t200\t300"
        for burst in range(5)
        for i in range(8)
    ]
    log = "\n".join(warmup + bursts) + "\n"
    assert h2load.started_together(log, warmup_seconds=0.5) == 8.0
    # A lone call beside a burst of 3: per call, (1 + 3 * 3) / 4.
    mixed = [f"{start}\t200\t1", f"{start + 1000}\t200\t1"]
    mixed += [f"{start + 1050}\t200\t1", f"{start + 1099}\t200\t1"]
    assert h2load.started_together("\n".join(mixed)) == 2.5
    assert math.isnan(h2load.started_together(""))


def _test_service_messages(folder: Path) -> ModuleType:
    """bench/protos/test_service.proto compiled here: the schema ghz and the interop server use."""
    protos = Path(__file__).resolve().parent.parent / "bench" / "protos"
    status = protoc.main(
        ["protoc", f"-I{protos}", f"--python_out={folder}", str(protos / "test_service.proto")]
    )
    assert status == 0
    spec = importlib.util.spec_from_file_location(
        "test_service_pb2", folder / "test_service_pb2.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _grpc_message(frame: bytes) -> bytes:
    assert frame[0] == 0  # not compressed
    assert int.from_bytes(frame[1:5], "big") == len(frame) - 5
    return frame[5:]


def test_request_frames_parse_as_the_interop_schema_says(tmp_path: Path) -> None:
    messages = _test_service_messages(tmp_path)

    unary = messages.SimpleRequest.FromString(_grpc_message(h2load.unary_request_frame(128)))
    assert unary.response_size == 128
    assert unary.payload.body == bytes(128)
    bulk = h2load.unary_request_frame(16, response_size=65536)
    assert messages.SimpleRequest.FromString(_grpc_message(bulk)).response_size == 65536

    streaming = messages.StreamingOutputCallRequest.FromString(
        _grpc_message(h2load.streaming_request_frame(128, 10))
    )
    assert [parameters.size for parameters in streaming.response_parameters] == [128] * 10
    assert streaming.payload.body == bytes(128)


# ghz 0.93's JSON report (-O json), trimmed: three calls, one cut at the end
# of a time-bounded run and one failed.
GHZ_REPORT = {
    "count": 5,
    "total": 2_495_462,
    "errorDistribution": {
        "rpc error: code = Unavailable desc = transport is closing": 1,
        "rpc error: code = Internal desc = boom": 1,
    },
    "statusCodeDistribution": {"OK": 3, "Unavailable": 1, "Internal": 1},
    "latencyDistribution": [
        {"percentage": 50, "latency": 225_944},
        {"percentage": 99, "latency": 1_717_542},
    ],
    "details": [
        {"timestamp": "2026-12-07T19:11:32.2249Z", "latency": 1_717_542, "status": "OK"},
        {"timestamp": "2026-12-07T19:11:32.2252Z", "latency": 215_288, "status": "OK"},
        {"timestamp": "2026-12-07T19:11:32.2255Z", "latency": 9_000_000, "status": "Internal"},
        {"timestamp": "2026-12-07T19:11:32.2258Z", "latency": 225_944, "status": "OK"},
        {"timestamp": "2026-12-07T19:11:32.2261Z", "latency": 8_000_000, "status": "Unavailable"},
    ],
}


def test_ghz_report_keeps_every_ok_call_latency_for_pooled_percentiles() -> None:
    result = ghz.parse(GHZ_REPORT)
    assert (result.ok, result.errors, result.cut) == (3, 1, 1)
    assert result.p50_ms == pytest.approx(0.225944)
    assert result.p99_ms == pytest.approx(1.717542)
    # The failed and cut calls' times are not latencies of answered calls.
    assert result.latencies_ms == pytest.approx((1.717542, 0.215288, 0.225944))
