"""Checks that a user's regular expression is one Envoy's RE2 engine accepts.

Envoy refuses a whole route configuration (a NACK) over one regex it cannot
compile, which would freeze every route, not just the bad one. RE2 is not
available here, so the check is: Python's `re` must compile it (catching
syntax errors), and it must not use the constructs Python has and RE2
lacks (backreferences, lookaround, atomic groups, possessive quantifiers),
since RE2 guarantees linear time by leaving exactly those out.
"""

from __future__ import annotations

import re

from xds_ingress.translate.validation import Invalid

# Envoy's default limit on a compiled RE2 program is 100; a few hundred
# characters of pattern is already far beyond any method or header match.
MAX_LENGTH = 1024

_GROUP_PREFIXES = {
    "(?=": "lookahead",
    "(?!": "lookahead",
    "(?<=": "lookbehind",
    "(?<!": "lookbehind",
    "(?>": "atomic groups",
    "(?P=": "backreferences",
    "(?(": "conditionals",
    "(?#": "comments",
}


def check_re2(pattern: str) -> Invalid | None:
    if len(pattern) > MAX_LENGTH:
        return Invalid(
            reason="UnsupportedValue",
            message=f"regular expression is longer than {MAX_LENGTH} characters",
        )
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as error:
        return Invalid(
            reason="UnsupportedValue",
            message=f"regular expression {pattern!r} does not compile: {error}",
        )
    construct = _unsupported_construct(pattern)
    if construct is not None:
        return Invalid(
            reason="UnsupportedValue",
            message=f"regular expression {pattern!r} uses {construct}, which Envoy's RE2 "
            "engine does not support",
        )
    return None


def _unsupported_construct(pattern: str) -> str | None:
    """The first construct RE2 lacks, scanning outside character classes."""
    in_class = False
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            escaped = pattern[index + 1 : index + 2]
            # \1..\9 refer back to a group (\0 is an octal escape in both).
            if not in_class and escaped.isdigit() and escaped != "0":
                return "backreferences"
            index += 2
            continue
        if in_class:
            if char == "]":
                in_class = False
        elif char == "[":
            in_class = True
            # A "]" right after "[" or "[^" is a literal, not the end.
            if pattern[index + 1 : index + 2] == "^":
                index += 1
            if pattern[index + 1 : index + 2] == "]":
                index += 1
        elif char == "(":
            for prefix, construct in _GROUP_PREFIXES.items():
                if pattern.startswith(prefix, index):
                    return construct
        elif char in "*+?}" and pattern[index + 1 : index + 2] == "+":
            return "possessive quantifiers"
        index += 1
    return None
