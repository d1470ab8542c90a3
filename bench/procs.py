"""Child processes of a benchmark: start, watch, measure, always stop.

Everything listens on loopback, on ports picked here. A child's peak memory
is the kernel's own high-water mark (VmHWM), read just before it is stopped,
so no sampling interval can miss a peak.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psutil

# Re-exported: the scenarios import them from here.
from bench.ports import LOOPBACK as LOOPBACK
from bench.ports import free_port as free_port


def accepts(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=0.2):
            return True
    except OSError:
        return False


def venv_tool(name: str) -> Path:
    """A console script installed beside this Python (xds-ingress, envoy)."""
    return Path(sys.executable).parent / name


def repo_tool(name: str) -> Path | None:
    """A benchmark peer built by bench/install-deps.sh into .cache/bin, if built."""
    path = Path(__file__).resolve().parent.parent / ".cache" / "bin" / name
    return path if path.exists() else None


@dataclass
class Child:
    """A running child process with its output going to a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    started: float  # time.perf_counter() just before it was spawned
    started_wall: float  # time.time() at the same moment, to read log timestamps
    _log: IO[bytes]

    @classmethod
    def spawn(
        cls,
        name: str,
        argv: Sequence[str | Path],
        *,
        log_path: Path,
        cpus: Sequence[int] = (),
        env: Mapping[str, str] | None = None,
    ) -> Child:
        """Start `argv`; `cpus` pins it (and its threads and children) to those CPUs."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("wb")
        pinned = set(cpus)

        def pin() -> None:
            # In the child before exec, so threads and forked workers inherit it.
            if pinned:
                os.sched_setaffinity(0, pinned)

        started, started_wall = time.perf_counter(), time.time()
        process = subprocess.Popen(
            [str(arg) for arg in argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, **(env or {})),
            preexec_fn=pin if pinned else None,
        )
        return cls(
            name=name,
            process=process,
            log_path=log_path,
            started=started,
            started_wall=started_wall,
            _log=log,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def check_alive(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise RuntimeError(f"{self.name} exited with {code}; log tail:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def peak_rss_bytes(self) -> int:
        """The kernel's high-water mark of resident memory (0 once exited)."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process and its threads so far."""
        try:
            times = psutil.Process(self.pid).cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)

    def cpu_seconds_precise(self) -> float:
        """CPU time of the process's live threads, in ns steps (schedstat).

        psutil's user + system move in clock ticks (10 ms), too coarse for
        one push that costs a few ms; threads that have exited are missed.
        """
        total_ns = 0
        try:
            for stat in Path(f"/proc/{self.pid}/task").glob("*/schedstat"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    total_ns += int(stat.read_text().split()[0])
        except OSError:
            return 0.0
        return total_ns / 1e9

    def stop(self, *, grace_seconds: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(grace_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@contextlib.contextmanager
def running(child: Child) -> Iterator[Child]:
    try:
        yield child
    finally:
        child.stop()


def wait_until_accepting(child: Child, port: int, *, within_seconds: float) -> float:
    """Seconds from the child's spawn until `port` accepts a connection."""
    deadline = time.perf_counter() + within_seconds
    while time.perf_counter() < deadline:
        child.check_alive()
        if accepts(port):
            return time.perf_counter() - child.started
        time.sleep(0.005)
    raise TimeoutError(f"{child.name}: port {port} not accepting after {within_seconds} s")


def spawn_interop_server(log_path: Path, *, cpus: Sequence[int] = ()) -> tuple[Child, int]:
    """The grpc-go interop server (the scenarios' backend) on a free loopback port.

    Returns before the port accepts: the caller registers the child for
    cleanup first, then calls `wait_until_accepting`, so a server that never
    comes up is still stopped.
    """
    interop = repo_tool("grpc-interop-server")
    if interop is None:
        raise FileNotFoundError("no grpc-interop-server: run bench/install-deps.sh")
    port = free_port()
    child = Child.spawn("backend", [interop, "-port", str(port)], log_path=log_path, cpus=cpus)
    return child, port
