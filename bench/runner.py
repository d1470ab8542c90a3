"""Runs scenarios: prepare each case, run it N times under a progress bar, summarise.

A failed run is recorded (with its error) and the others go on; a case
reports how many of its runs failed, so a median is never silently taken
over fewer samples than asked for.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from bench.results import CaseResult, ScenarioResult, collect
from bench.scenario import Scenario

log = logging.getLogger(__name__)


def run_scenarios(
    scenarios: Sequence[Scenario], *, runs: int, quick: bool, keep_workdir: bool
) -> list[ScenarioResult]:
    plans = [(scenario, scenario.cases(quick=quick)) for scenario in scenarios]
    total = sum(len(cases) * runs for _, cases in plans)
    results: list[ScenarioResult] = []
    with tqdm(total=total, unit="run", dynamic_ncols=True) as bar:
        for scenario, cases in plans:
            result = ScenarioResult(name=scenario.name, title=scenario.title)
            results.append(result)
            missing = scenario.available()
            if missing is not None:
                result.notes["skipped"] = missing
                bar.write(f"{scenario.name}: skipped: {missing}")
                bar.update(len(cases) * runs)
                continue
            for case in cases:
                workdir = Path(tempfile.mkdtemp(prefix=f"xds-bench-{scenario.name}-"))
                case_result = CaseResult(label=case.label, params=case.params)
                result.cases.append(case_result)
                try:
                    bar.set_description(f"{scenario.name} {case.label}: preparing")
                    started = time.perf_counter()
                    try:
                        case_result.notes.update(case.prepare(workdir))
                    except Exception as error:
                        case_result.notes["prepare_error"] = _describe(error)
                        bar.write(f"{scenario.name} {case.label}: prepare failed: {error}")
                        bar.update(runs)
                        continue
                    case_result.notes["prepare_seconds"] = time.perf_counter() - started
                    samples: list[dict[str, float]] = []
                    errors: list[str] = []
                    for index in range(runs):
                        bar.set_description(f"{scenario.name} {case.label}: run {index + 1}")
                        try:
                            sample = case.run_once(index, workdir / f"run-{index}")
                        except Exception as error:
                            errors.append(_describe(error))
                            bar.write(f"{scenario.name} {case.label} run {index + 1}: {error}")
                        else:
                            samples.append(sample)
                            bar.set_postfix_str(_postfix(sample))
                        bar.update(1)
                    case_result.metrics = collect(samples, scenario.metrics)
                    case_result.notes["runs_ok"] = len(samples)
                    if errors:
                        case_result.notes["run_errors"] = errors
                finally:
                    case.close()
                    if keep_workdir:
                        case_result.notes["workdir"] = str(workdir)
                    else:
                        shutil.rmtree(workdir, ignore_errors=True)
            result.targets = scenario.targets(result.cases)
    return results


def _postfix(sample: dict[str, float]) -> str:
    ratio = sample.get("ratio")
    return "" if ratio is None else f"ratio {ratio:.2f}"


def _describe(error: Exception) -> str:
    lines = traceback.format_exception_only(type(error), error)
    return "".join(lines).strip()[-2000:]
