"""Label selectors with Kubernetes' semantics (k8s.io/apimachinery/pkg/labels)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from xds_ingress.sources.objects import freeze
from xds_ingress.translate.label_selector import (
    INVALID_SELECTOR,
    LabelSelector,
    parse_selector,
)
from xds_ingress.translate.validation import Invalid

PROD = {"env": "prod", "team": "payments"}
STAGING = {"env": "staging"}
BARE: dict[str, str] = {}


def selector(raw: Any) -> LabelSelector:
    parsed = parse_selector(raw)
    assert isinstance(parsed, LabelSelector), parsed
    return parsed


def expression(key: str, operator: str, *values: str) -> dict[str, Any]:
    body: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        body["values"] = list(values)
    return body


@pytest.mark.parametrize(
    ("raw", "matched"),
    [
        # An empty selector matches everything, even a namespace without labels.
        ({}, {"prod", "staging", "bare"}),
        ({"matchLabels": {}, "matchExpressions": []}, {"prod", "staging", "bare"}),
        ({"matchLabels": {"env": "prod"}}, {"prod"}),
        # Every requirement must hold.
        ({"matchLabels": {"env": "prod", "team": "search"}}, set()),
        ({"matchExpressions": [expression("env", "In", "prod", "staging")]}, {"prod", "staging"}),
        # NotIn and DoesNotExist hold where the label is absent.
        ({"matchExpressions": [expression("env", "NotIn", "prod")]}, {"staging", "bare"}),
        ({"matchExpressions": [expression("team", "Exists")]}, {"prod"}),
        ({"matchExpressions": [expression("team", "DoesNotExist")]}, {"staging", "bare"}),
        (
            {
                "matchLabels": {"env": "prod"},
                "matchExpressions": [expression("team", "In", "search")],
            },
            set(),
        ),
        (
            {
                "matchExpressions": [
                    expression("env", "Exists"),
                    expression("env", "NotIn", "staging"),
                ]
            },
            {"prod"},
        ),
        # A label with an empty value exists, and equals "".
        ({"matchLabels": {"team": ""}}, set()),
    ],
)
def test_matches_as_kubernetes_does(raw: Mapping[str, Any], matched: set[str]) -> None:
    found = selector(raw)
    labels = {"prod": PROD, "staging": STAGING, "bare": BARE}
    assert {name for name, of in labels.items() if found.matches(of)} == matched
    # Objects reach translate frozen (tuples and read-only mappings): same answers.
    assert selector(freeze(raw)) == found


def test_an_empty_label_value_is_a_value() -> None:
    found = selector({"matchLabels": {"canary": ""}})
    assert found.matches({"canary": ""})
    assert not found.matches({})
    assert not found.matches({"canary": "yes"})


def test_keys_with_a_prefix_are_accepted() -> None:
    found = selector({"matchLabels": {"kubernetes.io/metadata.name": "shop"}})
    assert found.matches({"kubernetes.io/metadata.name": "shop"})


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"matchExpressions": [expression("env", "Equals", "prod")]}, "operator 'Equals'"),
        ({"matchExpressions": [expression("env", "in", "prod")]}, "operator 'in'"),
        ({"matchExpressions": [expression("env", "In")]}, "In needs at least one value"),
        ({"matchExpressions": [expression("env", "NotIn")]}, "NotIn needs at least one value"),
        ({"matchExpressions": [expression("env", "Exists", "x")]}, "Exists takes no values"),
        (
            {"matchExpressions": [expression("env", "DoesNotExist", "x")]},
            "DoesNotExist takes no values",
        ),
        ({"matchExpressions": [{"operator": "Exists"}]}, "key None is not a label key"),
        ({"matchExpressions": [expression("bad key", "Exists")]}, "'bad key' is not a label key"),
        ({"matchExpressions": [expression("Bad_Prefix/env", "Exists")]}, "is not a label key"),
        ({"matchExpressions": [expression("-env", "Exists")]}, "is not a label key"),
        ({"matchExpressions": [expression("env", "In", "no spaces")]}, "not a label value"),
        ({"matchExpressions": [expression("env", "In", "x" * 64)]}, "not a label value"),
        ({"matchExpressions": [{"key": "env", "operator": "In", "values": "prod"}]}, "a list"),
        ({"matchExpressions": [{"key": "env", "operator": "In", "values": [1]}]}, "not a string"),
        ({"matchExpressions": ["env"]}, "matchExpressions[0]: must be a mapping"),
        ({"matchExpressions": {"key": "env"}}, "matchExpressions must be a list"),
        ({"matchLabels": ["env"]}, "matchLabels must be a mapping"),
        ({"matchLabels": {"env": 1}}, "value 1 is not a string"),
        ({"matchLabels": {"env": True}}, "value True is not a string"),
        ({"matchLabels": {"": "prod"}}, "key '' is not a label key"),
        ("env=prod", "must be a mapping"),
        (["env"], "must be a mapping"),
    ],
)
def test_selectors_kubernetes_would_refuse_are_invalid(raw: Any, says: str) -> None:
    found = parse_selector(raw)
    assert isinstance(found, Invalid), found
    assert found.reason == INVALID_SELECTOR
    assert says in found.message, found.message


def test_the_second_expression_is_named_when_it_is_the_bad_one() -> None:
    found = parse_selector(
        {"matchExpressions": [expression("env", "Exists"), expression("team", "Has")]}
    )
    assert isinstance(found, Invalid)
    assert found.message.startswith("matchExpressions[1]: operator 'Has'"), found.message


def test_messages_quote_only_the_start_of_huge_values() -> None:
    found = parse_selector({"matchExpressions": [expression("env", "x" * 100_000)]})
    assert isinstance(found, Invalid)
    assert len(found.message) < 300, len(found.message)
