"""Checks that a user's regular expression is one Envoy's RE2 engine accepts.

Envoy refuses a whole route configuration (a NACK) over one regex it cannot
compile, which would freeze every route, not just the bad one. RE2 is not
available here, so the check is: Python's `re` must compile it (catching
syntax errors); it must not use the constructs Python has and RE2 lacks
(backreferences, lookaround, atomic groups, possessive quantifiers, the
escapes and flags only Python knows), since RE2 guarantees linear time by
leaving exactly those out; and its compiled RE2 program must stay within
Envoy's limit (the runtime key re2.max_program_size.error_level, 100 by
default), which a short pattern such as "a{200}" already exceeds.

The program size is estimated from Python's parse of the pattern, with
per-construct costs measured against RE2's own ProgramSize() and rounded
up, so that the estimate is never below what Envoy computes: a regex near
the limit may be refused here that Envoy would take, never the reverse.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from typing import Any

from xds_ingress.translate.validation import Invalid

# A pattern this long cannot fit in a program of MAX_PROGRAM_SIZE anyway;
# refusing it up front keeps the parse below cheap.
MAX_LENGTH = 1024
# Envoy's default re2.max_program_size.error_level.
MAX_PROGRAM_SIZE = 100
# RE2 refuses a counted repetition above this ("a{1001}").
MAX_REPEAT = 1000

# Python's own parser of regular expressions: private, but the only parse
# of a pattern the standard library has, and stable across 3.11-3.13.
_parser: Any = importlib.import_module("re._parser")
_UNBOUNDED = _parser.MAXREPEAT
# What RE2 spends on any program: match, fail and the unanchored prefix.
_PROGRAM_OVERHEAD = 4
# Measured: "." and a negated or non-ASCII class compile to about 8 UTF-8
# byte-range instructions; rounded up.
_WIDE_CLASS = 12
_CATEGORY_COST = {"CATEGORY_DIGIT": 1, "CATEGORY_WORD": 4, "CATEGORY_SPACE": 4}

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
# Escapes Python's `re` reads and RE2 refuses ("invalid escape sequence").
_PYTHON_ONLY_ESCAPES = {
    "u": r"\u escapes (use \x{...})",
    "U": r"\U escapes (use \x{...})",
    "N": r"\N{...} escapes",
    "Z": r"\Z (use \z)",
}
# Inline flags RE2 has; Python also has a, L, u and x, which RE2 refuses.
_RE2_FLAGS = frozenset("imsU-")


def check_re2(pattern: str) -> Invalid | None:
    if len(pattern) > MAX_LENGTH:
        return Invalid(
            reason="UnsupportedValue",
            message=f"regular expression is longer than {MAX_LENGTH} characters",
        )
    try:
        parsed = _parser.parse(pattern, 0)
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
    try:
        size = _PROGRAM_OVERHEAD + _cost(parsed, ignore_case=bool(parsed.state.flags & re.I))
    except _TooManyRepeats as error:
        return Invalid(
            reason="UnsupportedValue",
            message=f"regular expression {pattern!r} repeats {error.count} times; "
            f"RE2 allows at most {MAX_REPEAT}",
        )
    if size > MAX_PROGRAM_SIZE:
        return Invalid(
            reason="UnsupportedValue",
            message=f"regular expression {pattern!r} is too complex for Envoy: its RE2 "
            f"program would have about {size} instructions, above Envoy's limit of "
            f"{MAX_PROGRAM_SIZE}",
        )
    return None


def program_size(pattern: str) -> int:
    """The estimated RE2 program size of a pattern check_re2 accepts (for tests)."""
    parsed = _parser.parse(pattern, 0)
    return _PROGRAM_OVERHEAD + _cost(parsed, ignore_case=bool(parsed.state.flags & re.I))


class _TooManyRepeats(ValueError):
    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.count = count


def _cost(items: Iterable[tuple[Any, Any]], *, ignore_case: bool) -> int:
    return sum(_item_cost(str(op), value, ignore_case=ignore_case) for op, value in items)


def _item_cost(op: str, value: Any, *, ignore_case: bool) -> int:
    if op == "LITERAL":
        char = chr(value)
        # A case-folded letter becomes a class ("k" is also "K" and the Kelvin sign).
        if ignore_case and char.lower() != char.upper():
            return 8
        return len(char.encode("utf-8", "surrogatepass"))
    if op in ("NOT_LITERAL", "ANY"):
        return _WIDE_CLASS
    if op == "IN":
        # Case folding adds the other case of every range, and more for
        # letters with a third form (the Kelvin sign for "k").
        return _class_cost(value) * (3 if ignore_case else 1)
    if op == "AT":
        return 1
    if op == "SUBPATTERN":
        group, add_flags, del_flags, body = value
        folded = (ignore_case or bool(add_flags & re.I)) and not del_flags & re.I
        # A capturing group costs two capture instructions.
        return _cost(body, ignore_case=folded) + (0 if group is None else 2)
    if op == "BRANCH":
        _, alternatives = value
        return sum(_cost(alt, ignore_case=ignore_case) for alt in alternatives) + len(alternatives)
    if op in ("MAX_REPEAT", "MIN_REPEAT"):
        low, high, body = value
        unbounded = high is _UNBOUNDED
        low, high = int(low), int(low if unbounded else high)
        for count in (low, high):
            if count > MAX_REPEAT:
                raise _TooManyRepeats(count)
        cost = _cost(body, ignore_case=ignore_case)
        if unbounded:
            return max(low, 1) * cost + 2
        # RE2 unrolls a counted repetition: `low` copies, then optional ones.
        return low * cost + (high - low) * (cost + 2)
    # Anything else is a construct _unsupported_construct already refused;
    # counted high so an oversight errs towards refusing.
    return MAX_PROGRAM_SIZE


def _class_cost(items: list[tuple[Any, Any]]) -> int:
    cost = 0
    wide = False
    for op, value in items:
        name = str(op)
        if name == "NEGATE":
            wide = True
        elif name == "CATEGORY":
            category = str(value)
            if category in _CATEGORY_COST:
                cost += _CATEGORY_COST[category]
            else:
                wide = True  # \D, \W, \S: everything but a few ranges
        elif name == "LITERAL":
            wide = wide or value > 0x7F
            cost += 1
        elif name == "RANGE":
            wide = wide or value[1] > 0x7F
            cost += 1
        else:
            cost += _WIDE_CLASS
    return cost + 1 + (_WIDE_CLASS if wide else 0)


def _unsupported_construct(pattern: str) -> str | None:
    """The first construct RE2 lacks, scanning outside character classes."""
    in_class = False
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            escaped = pattern[index + 1 : index + 2]
            if escaped in _PYTHON_ONLY_ESCAPES:
                return _PYTHON_ONLY_ESCAPES[escaped]
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
            flags = _inline_flags(pattern, index)
            if flags is not None and not set(flags) <= _RE2_FLAGS:
                return f"the inline flags (?{flags}) (RE2 has only i, m, s and U)"
        elif char in "*+?}" and pattern[index + 1 : index + 2] == "+":
            return "possessive quantifiers"
        index += 1
    return None


def _inline_flags(pattern: str, index: int) -> str | None:
    """The letters of a "(?flags)" or "(?flags:" group starting at `index`."""
    match = re.compile(r"\(\?([A-Za-z-]+)[:)]").match(pattern, index)
    return match.group(1) if match else None
