"""The data-plane ablation measures configs that differ from what the product
renders by exactly the part each variant names: a variant whose part the
product no longer renders must fail here, not measure the full config under
a wrong name, and every variant must be a config Envoy accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from envoy_verdicts import validate_all

from bench import ablation, config_parts


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return ablation.rendered_bootstrap(
        tmp_path_factory.mktemp("ablation"), backend_port=50051, listen_port=18080, admin_port=0
    )


def _differences(left: Any, right: Any, path: str = "") -> list[str]:
    """Paths where two JSON documents differ."""
    if isinstance(left, dict) and isinstance(right, dict):
        return [
            difference
            for key in sorted(left.keys() | right.keys())
            for difference in _differences(left.get(key), right.get(key), f"{path}.{key}")
        ]
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        return [
            difference
            for index, (one, other) in enumerate(zip(left, right, strict=True))
            for difference in _differences(one, other, f"{path}[{index}]")
        ]
    return [] if left == right else [path]


EXPECTED_CHANGES = {
    "grpc_stats": "http_filters",
    "grpc_web": "http_filters",
    "retry_policy": "retry_policy",
    "grpc_timeout": "max_stream_duration",
    "route_names": "routes[0].name",
    "remote_address": "use_remote_address",
    "connection_timeouts": "common_http_protocol_options",
    "host_port_strip": "strip_any_host_port",
    "http2_windows": "http2_protocol_options",
    "outlier_detection": "outlier_detection",
    "breaker_tracking": "thresholds[0]",
}


def test_every_variant_is_listed_with_the_part_it_changes() -> None:
    assert set(EXPECTED_CHANGES) == set(config_parts.VARIANTS)


def test_the_groups_split_the_parts_between_them() -> None:
    # So the groups' savings add up to what `all` takes out, part for part.
    grouped = [part for parts in config_parts.GROUPS.values() for part in parts]
    assert sorted(grouped) == sorted(config_parts.VARIANTS)
    assert ablation.removed_parts(ablation.ALL_REMOVED) == tuple(config_parts.VARIANTS)


@pytest.mark.parametrize("name", sorted(config_parts.VARIANTS))
def test_a_variant_takes_out_only_its_own_part_of_what_the_product_renders(
    rendered: dict[str, Any], name: str
) -> None:
    before = json.dumps(rendered, sort_keys=True)

    variant = config_parts.variant_bootstrap(rendered, [name])

    changed = _differences(rendered, variant)
    assert changed, f"{name} changed nothing"
    assert all(EXPECTED_CHANGES[name] in path for path in changed), changed
    # The part is gone: asking for it again finds nothing.
    with pytest.raises(config_parts.NotRendered):
        config_parts.variant_bootstrap(variant, [name])
    # Variants work on a copy: the next one starts from the whole config.
    assert json.dumps(rendered, sort_keys=True) == before


def test_every_config_the_ablation_measures_is_one_envoy_accepts(
    rendered: dict[str, Any], tmp_path: Path
) -> None:
    configs = {
        name: config_parts.variant_bootstrap(rendered, ablation.removed_parts(name))
        for name in ablation.config_names()
        if name != ablation.TUNED
    }
    assert len(configs) == 1 + len(config_parts.VARIANTS) + len(config_parts.GROUPS) + 1
    verdicts = validate_all(tmp_path, {name: json.dumps(doc) for name, doc in configs.items()})
    failed = {name: output[-2000:] for name, (code, output) in verdicts.items() if code != 0}
    assert failed == {}


def test_a_part_is_costed_against_the_rendered_config_on_both_sides_of_it() -> None:
    # The machine slows by 2% per measurement; at equal speed the variant
    # "a" saves 2 µs per call, every part together 7 and the hand-tuned
    # config 8.
    costs = {ablation.RENDERED: 50.0, "a": 48.0, ablation.ALL_REMOVED: 43.0, ablation.TUNED: 42.0}
    order = ablation.schedule(["a", ablation.ALL_REMOVED, ablation.TUNED])
    assert order == ["rendered", "a", "rendered", "all", "rendered", "tuned", "rendered"]
    slowdown = [1.02**step for step in range(len(order))]
    measured = [
        ablation.Measured(name, costs[name] * slower, rate=1e6 / (costs[name] * slower))
        for name, slower in zip(order, slowdown, strict=True)
    ]

    sample = ablation.paired(measured)

    # Each saving as it was at that moment's speed.
    assert sample["a_saved_us"] == pytest.approx(2.0 * slowdown[1], abs=0.02)
    assert sample["all_saved_us"] == pytest.approx(7.0 * slowdown[3], abs=0.02)
    assert sample["tuned_saved_us"] == pytest.approx(8.0 * slowdown[5], abs=0.02)
    assert sample["a_cpu_us_per_call"] == pytest.approx(48.0 * slowdown[1])
    assert sample["rendered_vs_tuned"] == pytest.approx(42 / 50, rel=1e-3)
    assert sample["all_vs_tuned"] == pytest.approx(42 / 43, rel=1e-3)


def test_a_config_measured_without_the_rendered_one_beside_it_is_refused() -> None:
    measured = [
        ablation.Measured(name, 50.0, rate=1000.0)
        for name in ["rendered", "a", "tuned", "rendered"]
    ]
    with pytest.raises(ValueError, match="not measured between"):
        ablation.paired(measured)
