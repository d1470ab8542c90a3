"""The data-plane targets a run is judged on: a verdict the load did not earn
would publish a wrong claim, either way."""

from __future__ import annotations

from bench import coalescing, data_plane, ghz
from bench.report import readme_section, targets_lines
from bench.results import CaseResult, ScenarioResult, collect


def _case(case: data_plane.UnaryCase, **medians: float) -> CaseResult:
    samples = [dict(medians)] * 5
    return CaseResult(
        label=case.label,
        params=case.params,
        metrics=collect(samples, data_plane.METRICS),
    )


def test_added_latency_is_judged_under_paced_load_only() -> None:
    slow = {"xds_vs_static": 0.9, "xds_vs_nginx": 0.8, "xds_added_p99_25_ms": 2.5}
    ghz_case = _case(data_plane.UnaryCase(payload_bytes=128, seconds=1), **slow)
    h2load_case = _case(
        data_plane.H2loadCase(payload_bytes=128, seconds=1), **slow, xds_together_25=8.0
    )

    targets = data_plane.DataPlane().targets([ghz_case, h2load_case])

    verdicts = {target.name: target.verdict for target in targets}
    assert verdicts["added p99 at 25% load"] == "NOT met"
    # h2load's --rps sends bursts: its latency is shown, not judged...
    latency = next(t for t in targets if t.name == "added p99 at 25% load (unary 128 B (h2load))")
    assert latency.verdict == "not judged"
    assert latency.value == 2.5
    assert "8.0 started together" in latency.note
    # ...while its throughput is.
    assert verdicts["throughput vs hand-tuned Envoy (unary 128 B (h2load))"] == "NOT met"

    scenario = ScenarioResult(name="data-plane", title="", cases=[ghz_case, h2load_case])
    scenario.targets = targets
    lines = targets_lines(scenario)
    assert any(line.startswith("- **not judged**: added p99") for line in lines), lines


def test_a_scenario_without_targets_says_so_instead_of_an_empty_list() -> None:
    scenario = ScenarioResult(name="tls", title="TLS", cases=[])
    run = {
        "command": "python -m bench --scenario tls",
        "started_at": "2026-12-07T20:00:00+00:00",
        "runs": 5,
        "machine": {
            "cores": 2,
            "cpu": "x",
            "memory_gib": 1,
            "kernel": "6",
            "python": "3.11",
            "load_average_at_start": [0.5, 0.5, 0.5],
        },
        "load_during": {"median": 1.0, "min": 0.5, "max": 2.0},
    }
    section = readme_section(scenario, run=run, figure=None)
    assert "No target: issue 7 sets none for this scenario." in section
    assert "Targets (judged by the benchmark)" not in section


def test_what_failed_calls_said_reaches_the_coalescing_report() -> None:
    scenario = coalescing.Coalescing()
    small, large = scenario.cases(quick=False)
    refused = "rpc error: code = Unavailable desc = connection refused"
    report = {
        "total": 1e9,
        "statusCodeDistribution": {"OK": 90, "Unavailable": 10},
        "errorDistribution": {refused: 7, "rpc error: transport is closing": 3},
    }
    large.note_failures("envoy", ghz.parse(report))
    small.note_failures("envoy", ghz.parse({"total": 1e9, "statusCodeDistribution": {"OK": 9}}))
    results = [CaseResult(label=case.label, params=case.params) for case in (small, large)]

    scenario.targets(results)

    assert "failed_calls_said" not in results[0].notes
    # Calls cut by the load's own stop are not failures; the rest say why.
    assert results[1].notes["failed_calls_said"] == {"envoy": [refused]}
