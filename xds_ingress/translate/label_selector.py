"""Kubernetes label selectors (metav1.LabelSelector): parsed once, matched many times.

The semantics are Kubernetes' own (k8s.io/apimachinery/pkg/labels): every
requirement must hold; a selector without requirements matches everything;
`matchLabels: {k: v}` is `k In (v)`; NotIn and DoesNotExist hold for a
label that is absent. A selector Kubernetes would refuse to convert (an
unknown operator, In or NotIn without values, Exists or DoesNotExist with
values, a malformed key or value) is Invalid rather than guessed at: what
an unusable selector means is the caller's decision.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from xds_ingress.translate.validation import Invalid

IN = "In"
NOT_IN = "NotIn"
EXISTS = "Exists"
DOES_NOT_EXIST = "DoesNotExist"
OPERATORS = (IN, NOT_IN, EXISTS, DOES_NOT_EXIST)

INVALID_SELECTOR = "InvalidSelector"

# Label syntax (IsQualifiedName and IsValidLabelValue in apimachinery's
# validation): a name part of at most 63 alphanumerics, '-', '_' and '.',
# starting and ending alphanumeric, behind an optional DNS subdomain prefix.
_NAME = re.compile(r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_PREFIX = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_MAX_PREFIX = 253
# How much of a value a message quotes: enough to recognise it.
_SHOWN = 64


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str  # one of OPERATORS
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.operator == IN:
            return value is not None and value in self.values
        if self.operator == NOT_IN:
            return value is None or value not in self.values
        if self.operator == EXISTS:
            return value is not None
        return value is None


@dataclass(frozen=True, slots=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(requirement.matches(labels) for requirement in self.requirements)


def parse_selector(raw: object) -> LabelSelector | Invalid:
    """A selector as written (matchLabels, matchExpressions), or why it cannot be used."""
    if not isinstance(raw, Mapping):
        return _invalid(f"must be a mapping, not {_shown(raw)}")
    requirements: list[Requirement] = []
    match_labels = raw.get("matchLabels")
    if match_labels is not None:
        if not isinstance(match_labels, Mapping):
            return _invalid(f"matchLabels must be a mapping, not {_shown(match_labels)}")
        for key, value in match_labels.items():
            where = f"matchLabels[{_shown(key)}]"
            problem = _key_problem(key) or _value_problem(value)
            if problem:
                return _invalid(f"{where}: {problem}")
            requirements.append(Requirement(key, IN, frozenset({value})))
    expressions = raw.get("matchExpressions")
    if expressions is not None:
        if not isinstance(expressions, list | tuple):
            return _invalid(f"matchExpressions must be a list, not {_shown(expressions)}")
        for index, expression in enumerate(expressions):
            found = _requirement(expression)
            if isinstance(found, str):
                return _invalid(f"matchExpressions[{index}]: {found}")
            requirements.append(found)
    return LabelSelector(tuple(requirements))


def _requirement(raw: object) -> Requirement | str:
    """One matchExpressions entry, or what is wrong with it."""
    if not isinstance(raw, Mapping):
        return f"must be a mapping, not {_shown(raw)}"
    key, operator, values = raw.get("key"), raw.get("operator"), raw.get("values")
    problem = _key_problem(key)
    if problem:
        return problem
    if operator not in OPERATORS:
        return f"operator {_shown(operator)} is not one of {', '.join(OPERATORS)}"
    assert isinstance(key, str) and isinstance(operator, str)
    if values is None:
        values = ()
    if not isinstance(values, list | tuple):
        return f"values must be a list of strings, not {_shown(values)}"
    for value in values:
        problem = _value_problem(value)
        if problem:
            return f"values: {problem}"
    if operator in (IN, NOT_IN) and not values:
        return f"operator {operator} needs at least one value"
    if operator in (EXISTS, DOES_NOT_EXIST) and values:
        return f"operator {operator} takes no values"
    return Requirement(key, operator, frozenset(values))


def _key_problem(key: object) -> str:
    if not isinstance(key, str) or not key:
        return f"key {_shown(key)} is not a label key"
    prefix, slash, name = key.rpartition("/")
    if (slash and (len(prefix) > _MAX_PREFIX or not _PREFIX.fullmatch(prefix))) or not (
        _NAME.fullmatch(name)
    ):
        return (
            f"key {_shown(key)} is not a label key: an optional DNS subdomain and '/', "
            "then at most 63 letters, digits, '-', '_' or '.', starting and ending "
            "with a letter or digit"
        )
    return ""


def _value_problem(value: object) -> str:
    if not isinstance(value, str):
        return f"value {_shown(value)} is not a string"
    if value and not _NAME.fullmatch(value):
        return (
            f"value {_shown(value)} is not a label value: at most 63 letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit"
        )
    return ""


def _shown(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= _SHOWN else shown[: _SHOWN - 1] + "…"


def _invalid(message: str) -> Invalid:
    return Invalid(reason=INVALID_SELECTOR, message=message)
