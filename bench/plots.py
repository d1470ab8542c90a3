"""PNG figures of a scenario's results (matplotlib, Agg: no display needed).

Bars are medians; the whiskers run from the min to the max of the runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # (after the backend is chosen)
from matplotlib.axes import Axes

from bench.results import CaseResult, ScenarioResult


def _spread(cases: Sequence[CaseResult], name: str) -> tuple[list[float], list[list[float]]]:
    """Medians, and matplotlib's [below, above] error lengths, of one metric."""
    medians: list[float] = []
    below: list[float] = []
    above: list[float] = []
    for case in cases:
        metric = case.metrics.get(name)
        if metric is None:
            medians.append(float("nan"))
            below.append(0.0)
            above.append(0.0)
            continue
        medians.append(metric.median)
        below.append(metric.median - metric.min)
        above.append(metric.max - metric.median)
    return medians, [below, above]


def _bars(
    axes: Axes, cases: Sequence[CaseResult], series: Sequence[tuple[str, str]], *, ylabel: str
) -> None:
    width = 0.8 / len(series)
    for offset, (name, label) in enumerate(series):
        medians, errors = _spread(cases, name)
        positions = [i + (offset - (len(series) - 1) / 2) * width for i in range(len(cases))]
        axes.bar(positions, medians, width, yerr=errors, capsize=4, label=label)
    axes.set_xticks(range(len(cases)), [case.label for case in cases])
    axes.set_ylabel(ylabel)
    axes.legend()
    axes.grid(axis="y", alpha=0.3)


_COLD_START_STAGES = (
    # (label, end milestone, start milestone): medians, stacked.
    ("control plane start (Python, imports)", "cp_listening_s", None),
    ("reading the folder (file source)", "cp_synced_s", "cp_listening_s"),
    ("translate + build + serialise", "cp_published_s", "cp_synced_s"),
    ("sending, Envoy applying, ACKs", "xds_live_s", "cp_published_s"),
)


def _median(case: CaseResult, name: str | None) -> float:
    if name is None:
        return 0.0
    value = case.median(name)
    return float("nan") if value is None else value


def cold_start(result: ScenarioResult, path: Path) -> Path:
    cases = [case for case in result.cases if case.metrics]
    figure, (times, ratios) = plt.subplots(1, 2, figsize=(13, 5))
    positions = range(len(cases))
    width = 0.27
    static, static_err = _spread(cases, "static_live_s")
    times.bar(
        [p - width for p in positions],
        static,
        width,
        yerr=static_err,
        capsize=4,
        color="tab:blue",
        label="Envoy, static file (yardstick)",
    )
    bottom = [0.0] * len(cases)
    colours = ("tab:gray", "tab:red", "tab:purple", "tab:orange")
    for (label, end, begin), colour in zip(_COLD_START_STAGES, colours, strict=True):
        heights = [max(0.0, _median(c, end) - _median(c, begin)) for c in cases]
        times.bar(positions, heights, width, bottom=bottom, color=colour, label=f"xDS: {label}")
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    _, total_err = _spread(cases, "xds_live_s")
    times.errorbar(positions, bottom, yerr=total_err, fmt="none", ecolor="black", capsize=4)
    restart, restart_err = _spread(cases, "envoy_restart_s")
    times.bar(
        [p + width for p in positions],
        restart,
        width,
        yerr=restart_err,
        capsize=4,
        color="tab:green",
        label="a new Envoy, control plane already up",
    )
    times.set_xticks(list(positions), [case.label for case in cases])
    times.set_ylabel("seconds to LIVE, all ACKed (median; whiskers min-max)")
    times.set_title("Cold start")
    times.legend(fontsize="small")
    times.grid(axis="y", alpha=0.3)

    cold, cold_err = _spread(cases, "ratio")
    warm, warm_err = _spread(cases, "restart_ratio")
    ratios.bar(
        [p - 0.2 for p in positions],
        cold,
        0.4,
        yerr=cold_err,
        capsize=4,
        color="tab:orange",
        label="cold start: control plane + Envoy",
    )
    ratios.bar(
        [p + 0.2 for p in positions],
        warm,
        0.4,
        yerr=warm_err,
        capsize=4,
        color="tab:green",
        label="a new Envoy, control plane already up",
    )
    ratios.axhline(1.25, color="tab:red", linestyle="--", label="target: cold start ≤ 1.25x")
    ratios.set_xticks(list(positions), [case.label for case in cases])
    ratios.set_ylabel("/ static-file yardstick (paired per run)")
    ratios.set_title("Ratio to Envoy loading the same config from a file")
    ratios.legend(fontsize="small")
    ratios.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


_PROXIES = (
    ("static", "Envoy, hand-tuned static", "tab:orange"),
    ("xds", "Envoy configured by xds-ingress", "tab:green"),
    ("nginx", "nginx grpc_pass", "tab:red"),
)


def data_plane(result: ScenarioResult, path: Path) -> Path:
    """One row of three panels per case (unary, streaming)."""
    cases = [case for case in result.cases if case.metrics]
    rows = max(len(cases), 1)
    figure, grid = plt.subplots(
        rows,
        3,
        figsize=(16, 4.8 * rows),
        gridspec_kw={"width_ratios": [1.1, 1.6, 0.9]},
        squeeze=False,
    )
    for case, (throughput, latency, cpu) in zip(cases, grid, strict=False):
        _data_plane_row(case, throughput, latency, cpu)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _data_plane_row(case: CaseResult, throughput: Axes, latency: Axes, cpu: Axes) -> None:
    targets = [("direct", "backend directly (floor)", "tab:blue"), *_PROXIES]
    shown = [t for t in targets if f"{t[0]}_rps" in case.metrics]
    for index, (name, label, colour) in enumerate(shown):
        metric = case.metrics[f"{name}_rps"]
        throughput.bar(
            index,
            metric.median,
            0.7,
            yerr=[[metric.median - metric.min], [metric.max - metric.median]],
            capsize=4,
            color=colour,
            label=label,
        )
    throughput.set_xticks(range(len(shown)), [t[0] for t in shown])
    throughput.set_ylabel("calls/s at max rate (median; whiskers min-max)")
    throughput.set_title(f"Throughput, {case.label}")
    throughput.legend(fontsize="small")
    throughput.grid(axis="y", alpha=0.3)

    groups = [("p50", "25"), ("p99", "25"), ("p50", "100"), ("p99", "100")]
    proxies = [p for p in _PROXIES if f"{p[0]}_rps" in case.metrics]
    width = 0.8 / max(len(proxies), 1)
    for offset, (name, label, colour) in enumerate(proxies):
        medians, below, above = [], [], []
        for pct, load in groups:
            added = case.metrics.get(f"{name}_added_{pct}_{load}_ms")
            medians.append(added.median if added else float("nan"))
            below.append(added.median - added.min if added else 0.0)
            above.append(added.max - added.median if added else 0.0)
        positions = [i + (offset - (len(proxies) - 1) / 2) * width for i in range(len(groups))]
        latency.bar(
            positions, medians, width, yerr=[below, above], capsize=3, color=colour, label=label
        )
    latency.axhline(1.0, color="black", linestyle=":", label="target: added p99 ≤ 1 ms @25%")
    latency.set_xticks(range(len(groups)), [f"{pct} @{load}%" for pct, load in groups])
    latency.set_ylabel("ms added over direct at the same load")
    latency.set_title("Added latency")
    latency.legend(fontsize="small")
    latency.grid(axis="y", alpha=0.3)

    for index, (name, _label, colour) in enumerate(proxies):
        per_call = case.metrics.get(f"{name}_cpu_us_per_call")
        if per_call is None:
            continue
        cpu.bar(
            index,
            per_call.median,
            0.7,
            yerr=[[per_call.median - per_call.min], [per_call.max - per_call.median]],
            capsize=4,
            color=colour,
        )
    cpu.set_xticks(range(len(proxies)), [p[0] for p in proxies])
    cpu.set_ylabel("proxy CPU µs per call at max rate")
    cpu.set_title("Proxy CPU per call")
    cpu.grid(axis="y", alpha=0.3)


def _latency_with_target(
    result: ScenarioResult, path: Path, *, title: str, target_ms: float, counts: Sequence[str]
) -> Path:
    """p50/p99/max per case against a target line; beside it, counts that must be 0."""
    cases = [case for case in result.cases if case.metrics]
    figure, (times, bad) = plt.subplots(
        1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [1.4, 1]}
    )
    _bars(
        times,
        cases,
        [("p50_ms", "p50"), ("p99_ms", "p99"), ("max_ms", "slowest")],
        ylabel="ms from the write (median of runs; whiskers min-max)",
    )
    times.axhline(
        target_ms, color="tab:red", linestyle="--", label=f"target: p99 ≤ {target_ms:g} ms"
    )
    times.legend(fontsize="small")
    times.set_title(title)
    shown = [(name, result_label(cases, name)) for name in counts]
    _bars(bad, cases, shown, ylabel="count per run (must be 0)")
    bad.legend(fontsize="x-small", loc="best")
    bad.set_title("What should not happen")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def result_label(cases: Sequence[CaseResult], name: str) -> str:
    """A metric's own description (without its unit), for a legend."""
    for case in cases:
        metric = case.metrics.get(name)
        if metric is not None:
            return metric.description
    return name


def route_propagation(result: ScenarioResult, path: Path) -> Path:
    return _latency_with_target(
        result,
        path,
        title="Ingress write → first successful call",
        target_ms=50.0,
        counts=("bad_responses", "envoy_no_cluster", "envoy_no_healthy_upstream", "timeouts"),
    )


def endpoint_change(result: ScenarioResult, path: Path) -> Path:
    return _latency_with_target(
        result,
        path,
        title="EndpointSlice write → first call through the new host",
        target_ms=50.0,
        counts=("timeouts",),
    )


def fan_out(result: ScenarioResult, path: Path) -> Path:
    cases = [case for case in result.cases if case.metrics]
    figure, (times, cpu) = plt.subplots(1, 2, figsize=(12, 4.8))
    _bars(
        times,
        cases,
        [("first_acked_ms", "first Envoy ACKed"), ("all_acked_ms", "every Envoy ACKed")],
        ylabel="ms from the Ingress write (median; whiskers min-max)",
    )
    one = next((case for case in cases if case.params.get("envoys") == 1), None)
    one_ms = one.median("all_acked_ms") if one else None
    if one_ms is not None:
        times.axhline(2 * one_ms, color="tab:red", linestyle="--", label="target: 2x one Envoy")
        times.legend(fontsize="small")
    times.set_title("One change, all Envoys ACKed")
    _bars(
        cpu,
        cases,
        [("cp_cpu_ms_per_push", "per push"), ("cp_cpu_ms_per_envoy", "per push per Envoy")],
        ylabel="control plane CPU ms",
    )
    cpu.set_title("Control plane CPU")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def coalescing(result: ScenarioResult, path: Path) -> Path:
    cases = [case for case in result.cases if case.metrics]
    figure, axes = plt.subplots(figsize=(9, 4.8))
    _bars(
        axes,
        cases,
        [
            ("h2_minimum", "HTTP/2 minimum (yardstick)"),
            ("envoy_upstream_peak", "Envoy (xds-ingress), peak"),
            ("nginx_upstream_peak", "nginx grpc_pass, peak"),
        ],
        ylabel="upstream connections (log scale)",
    )
    axes.set_yscale("log")
    axes.set_title("Upstream connections for 10 calls in flight per client")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def tls(result: ScenarioResult, path: Path) -> Path:
    cases = [case for case in result.cases if case.metrics]
    figure, (handshakes, bulk) = plt.subplots(1, 2, figsize=(12, 4.8))
    _bars(
        handshakes,
        cases,
        [
            ("openssl_sign_per_s", "openssl speed: private-key ops/s (yardstick)"),
            ("handshakes_per_envoy_cpu_s", "Envoy: new connections per CPU-second"),
            ("handshakes_per_s", "Envoy: new connections per second (wall)"),
        ],
        ylabel="per second (log scale)",
    )
    handshakes.set_yscale("log")
    handshakes.set_title("TLS handshakes (one call each)")
    _bars(
        bulk,
        cases,
        [
            ("openssl_cipher_mib_per_s", "openssl speed: the cipher, 16 KiB (yardstick)"),
            ("bulk_mib_per_s", "through the TLS listener"),
        ],
        ylabel="MiB/s (log scale)",
    )
    bulk.set_yscale("log")
    bulk.set_title("Bulk throughput, 256 KiB replies")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


PLOTTERS: dict[str, Callable[[ScenarioResult, Path], Path]] = {
    "cold-start": cold_start,
    "data-plane": data_plane,
    "route-propagation": route_propagation,
    "endpoint-change": endpoint_change,
    "fan-out": fan_out,
    "coalescing": coalescing,
    "tls": tls,
}
