"""The machine a run measured on: cores, CPU, memory, and how busy it was.

Absolute times move with the machine and with whatever else runs on it, so
every result carries the load average before and during its run, and a
run can wait (boundedly) for a quiet machine before it starts.
"""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def load_1m() -> float:
    return os.getloadavg()[0]


def describe() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "memory_gib": round(memory_gib(), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_start": list(os.getloadavg()),
    }


@dataclass(frozen=True, slots=True)
class QuietWait:
    quiet: bool
    waited_seconds: float
    load_1m: float


def wait_for_quiet(*, below: float, max_seconds: float, poll_seconds: float = 5.0) -> QuietWait:
    """Wait until the 1-minute load average is below `below`, at most `max_seconds`."""
    started = time.monotonic()
    while True:
        load = load_1m()
        waited = time.monotonic() - started
        if load < below:
            return QuietWait(quiet=True, waited_seconds=waited, load_1m=load)
        if waited >= max_seconds:
            return QuietWait(quiet=False, waited_seconds=waited, load_1m=load)
        time.sleep(min(poll_seconds, max_seconds - waited))


def _busy_seconds() -> tuple[float, float]:
    """(CPU seconds the whole machine spent busy, seconds stolen by the hypervisor)."""
    times = psutil.cpu_times()
    busy = sum(getattr(times, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq"))
    return busy, getattr(times, "steal", 0.0)


def _own_seconds() -> float:
    """CPU seconds of this process and its children, live or already reaped."""
    me = psutil.Process()
    times = me.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in me.children(recursive=True):
        try:
            child_times = child.cpu_times()
        except psutil.Error:
            continue
        total += child_times.user + child_times.system
    return float(total)


@dataclass
class LoadSampler:
    """Samples, in a thread while a run goes on, how busy the machine is.

    The load average counts the benchmark's own processes too, so each
    sample also says how many cores *other* processes kept busy (the
    machine's busy CPU time minus this process tree's), which is what can
    disturb a measurement.
    """

    interval_seconds: float = 5.0
    samples: list[float] = field(default_factory=list)
    other_cores: list[float] = field(default_factory=list)
    steal_cores: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> LoadSampler:
        self._thread = threading.Thread(target=self._run, name="load-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_seconds + 1)

    def _run(self) -> None:
        before = (time.monotonic(), *_busy_seconds(), _own_seconds())
        while True:
            self.samples.append(load_1m())
            if self._stop.wait(self.interval_seconds):
                return
            now = (time.monotonic(), *_busy_seconds(), _own_seconds())
            elapsed = now[0] - before[0]
            if elapsed > 0:
                others = (now[1] - before[1]) - (now[3] - before[3])
                self.other_cores.append(max(0.0, others / elapsed))
                self.steal_cores.append((now[2] - before[2]) / elapsed)
            before = now

    def summary(self) -> dict[str, Any]:
        if not self.samples:
            return {"samples": 0}
        summary: dict[str, Any] = {
            "samples": len(self.samples),
            "min": min(self.samples),
            "median": statistics.median(self.samples),
            "max": max(self.samples),
        }
        if self.other_cores:
            summary["other_processes_cores"] = {
                "median": statistics.median(self.other_cores),
                "max": max(self.other_cores),
                "mean": statistics.fmean(self.other_cores),
            }
            summary["steal_cores_mean"] = statistics.fmean(self.steal_cores)
        return summary
