"""Results as JSON, a summary table, and their section of bench/README.md.

Each scenario owns one section of the README between two markers, so
running one scenario rewrites its own figures and leaves the others alone.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.results import Metric, ScenarioResult


def _number(value: float) -> str:
    if value != value:  # NaN
        return "—"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def cell(metric: Metric | None) -> str:
    if metric is None:
        return "—"
    return f"{_number(metric.median)} ({_number(metric.min)}-{_number(metric.max)})"


def metric_table(result: ScenarioResult) -> list[list[str]]:
    """Rows of [metric, unit, case 1, case 2, …] with median (min-max) cells."""
    names: list[str] = []
    for case in result.cases:
        names.extend(name for name in case.metrics if name not in names)
    header = ["metric", "unit", *(case.label for case in result.cases)]
    rows = [header]
    for name in names:
        first = next(case.metrics[name] for case in result.cases if name in case.metrics)
        rows.append(
            [
                f"{name}: {first.description}",
                first.unit,
                *(cell(case.metrics.get(name)) for case in result.cases),
            ]
        )
    runs = ["runs ok", "", *(str(case.notes.get("runs_ok", 0)) for case in result.cases)]
    rows.append(runs)
    return rows


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    header, *body = rows
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(row) + " |" for row in body)
    return "\n".join(lines)


def text_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def targets_lines(result: ScenarioResult) -> list[str]:
    lines = []
    for target in result.targets:
        value = "—" if target.value is None else f"{_number(target.value)} {target.unit}"
        note = f" ({target.note})" if target.note else ""
        lines.append(f"- **{target.verdict}**: {target.description}; measured {value}{note}")
    return lines


def console_summary(results: Sequence[ScenarioResult]) -> str:
    parts = []
    for result in results:
        parts.append(f"== {result.name}: {result.title}")
        if "skipped" in result.notes:
            parts.append(f"skipped: {result.notes['skipped']}")
            continue
        parts.append(text_table(metric_table(result)))
        parts.extend(
            line.replace("**", "").replace("- ", "target ", 1) for line in targets_lines(result)
        )
        for case in result.cases:
            for key in ("prepare_error", "run_errors"):
                if key in case.notes:
                    parts.append(f"{case.label}: {key}: {case.notes[key]}")
    return "\n".join(parts)


def write_json(path: Path, document: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def _machine_line(run: Mapping[str, Any]) -> str:
    machine = run["machine"]
    during = run["load_during"]
    start = machine["load_average_at_start"]
    waited = run.get("quiet_wait", {})
    quiet = (
        ""
        if not waited
        else (
            f"; waited {waited['waited_seconds']:.0f} s for a quiet machine "
            f"({'reached' if waited['quiet'] else 'not reached'}: load {waited['load_1m']:.2f})"
        )
    )
    load = (
        f"1-min load average {start[0]:.2f} at start{quiet}; during the run "
        f"median {during.get('median', float('nan')):.2f}, "
        f"min {during.get('min', float('nan')):.2f}, max {during.get('max', float('nan')):.2f} "
        "(the benchmark's own processes included)"
    )
    others = during.get("other_processes_cores")
    if others is not None:
        load += (
            f"; other processes kept {others['mean']:.2f} cores busy on average "
            f"(max {others['max']:.2f} over 5 s)"
        )
    return (
        f"{machine['cores']} cores ({machine['cpu']}), {machine['memory_gib']} GiB, "
        f"Linux {machine['kernel']}, Python {machine['python']}; {load}"
    )


def readme_section(result: ScenarioResult, *, run: Mapping[str, Any], figure: str | None) -> str:
    lines = [
        f"### Results: {result.title}",
        "",
        f"Made by `{run['command']}` on {run['started_at']} "
        f"({run['runs']} runs per case; cells are median (min-max)).",
        "",
        f"Machine: {_machine_line(run)}.",
        "",
    ]
    if "skipped" in result.notes:
        lines += [f"Skipped: {result.notes['skipped']}", ""]
        return "\n".join(lines)
    if result.targets:
        lines += ["Targets (judged by the benchmark):", "", *targets_lines(result), ""]
    else:
        lines += ["No target: issue 7 sets none for this scenario.", ""]
    if figure is not None:
        lines += [f"![{result.name}]({figure})", ""]
    lines += [markdown_table(metric_table(result)), ""]
    for case in result.cases:
        shown = {k: v for k, v in case.notes.items() if k not in {"runs_ok", "workdir"}}
        if shown:
            lines.append(f"- {case.label}: " + "; ".join(_note_items(shown)))
    lines.append("")
    return "\n".join(lines)


def _note_items(notes: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Flattened `key: value` texts of a case's notes, numbers rounded."""
    items: list[str] = []
    for key, value in notes.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            items.extend(_note_items(value, prefix=f"{name}."))
        elif isinstance(value, float):
            items.append(f"{name} {_number(value)}")
        elif isinstance(value, list | tuple):
            items.append(f"{name} {json.dumps(value, default=str)}")
        else:
            items.append(f"{name} {value}")
    return items


def update_readme(readme: Path, name: str, section: str) -> None:
    """Replace (or append) the section between this scenario's markers."""
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    text = readme.read_text() if readme.exists() else ""
    block = f"{begin}\n{section.rstrip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _match: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    readme.write_text(text)
