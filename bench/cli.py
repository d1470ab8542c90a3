"""`python -m bench`: run the benchmarks of issue 7 and report them.

    python -m bench [--scenario NAME ...] [--runs N] [--quick]

Results go to bench/results/<timestamp>.json (git-ignored). A full run also
rewrites its scenarios' figures (bench/<scenario>.png) and sections of
bench/README.md, with the command that made them; a --quick run (small
sizes, for a smoke test) writes its figures beside its JSON instead, unless
--publish is given.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import machine, plots, report
from bench.ablation import DataPlaneAblation
from bench.coalescing import Coalescing
from bench.cold_start import ColdStart
from bench.data_plane import DataPlane
from bench.endpoint_change import EndpointChange
from bench.fan_out import FanOut
from bench.route_propagation import RoutePropagation
from bench.runner import run_scenarios
from bench.scenario import Scenario
from bench.tls import Tls

BENCH_DIR = Path(__file__).resolve().parent
SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        ColdStart(),
        DataPlane(),
        DataPlaneAblation(),
        RoutePropagation(),
        EndpointChange(),
        FanOut(),
        Coalescing(),
        Tls(),
    )
}
DEFAULT_RUNS = 5


def _runs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of runs, got {text!r}") from None
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"runs must be 1-100, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmarks of xds-ingress against their yardsticks"
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only this scenario (repeatable; default: all)",
    )
    parser.add_argument(
        "--runs",
        type=_runs,
        default=DEFAULT_RUNS,
        help=f"runs per case (default {DEFAULT_RUNS}; issue 7 asks for at least 5)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and short loads: a smoke test"
    )
    parser.add_argument(
        "--publish",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rewrite bench/README.md and bench/*.png (default: yes, unless --quick)",
    )
    parser.add_argument(
        "--quiet-load",
        type=float,
        default=1.0,
        help="wait until the 1-minute load average is below this before starting (default 1.0)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=300.0,
        help="wait at most this many seconds for that (default 300; 0: do not wait)",
    )
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep each case's folder (logs, configs)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    publish = not args.quick if args.publish is None else args.publish
    names = args.scenario or list(SCENARIOS)
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    started = datetime.now(UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")

    run: dict[str, Any] = {
        "command": command.strip(),
        "started_at": started.isoformat(timespec="seconds"),
        "runs": args.runs,
        "quick": args.quick,
        "machine": machine.describe(),
    }
    if args.quiet_wait > 0:
        print(
            f"waiting up to {args.quiet_wait:.0f} s for a 1-min load average "
            f"below {args.quiet_load} (now {machine.load_1m():.2f})",
            file=sys.stderr,
        )
        waited = machine.wait_for_quiet(below=args.quiet_load, max_seconds=args.quiet_wait)
        run["quiet_wait"] = {
            "quiet": waited.quiet,
            "waited_seconds": waited.waited_seconds,
            "load_1m": waited.load_1m,
        }
    with machine.LoadSampler() as load:
        results = run_scenarios(
            [SCENARIOS[name] for name in names],
            runs=args.runs,
            quick=args.quick,
            keep_workdir=args.keep_workdir,
        )
    run["load_during"] = load.summary()
    run["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    run["scenarios"] = [result.to_json() for result in results]

    results_dir = BENCH_DIR / "results"
    # Written before the figures too, so a plotting bug loses no measurement.
    json_path = report.write_json(results_dir / f"{stamp}.json", run)
    figure_dir = BENCH_DIR if publish else results_dir
    figures: dict[str, str] = {}
    for result in results:
        plot = plots.PLOTTERS.get(result.name)
        if plot is None or not any(case.metrics for case in result.cases):
            continue
        name = f"{result.name}.png" if publish else f"{stamp}-{result.name}.png"
        path = plot(result, figure_dir / name)
        figures[result.name] = os.path.relpath(path, BENCH_DIR)
    run["figures"] = figures
    report.write_json(json_path, run)
    if publish:
        for result in results:
            section = report.readme_section(result, run=run, figure=figures.get(result.name))
            report.update_readme(BENCH_DIR / "README.md", result.name, section)

    print(report.console_summary(results))
    print(f"\nresults: {os.path.relpath(json_path)}")
    for figure in figures.values():
        print(f"figure: {os.path.relpath(BENCH_DIR / figure)}")
    if publish:
        print(f"README: {os.path.relpath(BENCH_DIR / 'README.md')}")
    return 0
