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
    case = next((case for case in result.cases if case.metrics), None)
    figure, (throughput, latency, cpu) = plt.subplots(
        1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [1.1, 1.6, 0.9]}
    )
    if case is None:
        figure.savefig(path, dpi=100)
        plt.close(figure)
        return path
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
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


PLOTTERS: dict[str, Callable[[ScenarioResult, Path], Path]] = {
    "cold-start": cold_start,
    "data-plane": data_plane,
}
