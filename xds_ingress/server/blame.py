"""Which resources of a rejected state-of-the-world response Envoy refused.

A NACK rejects a whole response, but Envoy's error text names the resources
it choked on ("Error adding/updating cluster(s) demo/api:50051: ..."). Blaming
only those lets the rest of the response through on the next push; when the
text names none of them, every resource the response changed is blamed,
since Envoy already held (and so accepted) the others.

Names are matched on boundaries: a cluster named `c` is not found in the word
"cluster", nor `demo/a:5005` in "demo/a:50051".
"""

from __future__ import annotations

from collections.abc import Iterable

# Characters resource names are made of (Kubernetes names, ns/name:port).
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-/.:")
# Punctuation that ends a sentence or a "name: reason" when nothing follows it.
_TRAILING = frozenset(".:")


def _continues_name(text: str, end: int) -> bool:
    """Whether the name-like run in `text` goes on at `end`."""
    if end >= len(text):
        return False
    char = text[end]
    if char in _TRAILING:
        following = text[end + 1] if end + 1 < len(text) else ""
        return following.isalnum() or following == "_"
    return char in _NAME_CHARS


def mentions(text: str, name: str) -> bool:
    """`name` appears in `text` as a whole name, not as part of a longer one."""
    if not name:
        return False
    start = text.find(name)
    while start != -1:
        before = text[start - 1] if start > 0 else ""
        if before not in _NAME_CHARS and not _continues_name(text, start + len(name)):
            return True
        start = text.find(name, start + 1)
    return False


def blamed(message: str, changed: Iterable[str]) -> frozenset[str]:
    """The names in `changed` that `message` names, or all of `changed` if it names none."""
    candidates = frozenset(changed)
    named = frozenset(name for name in candidates if mentions(message, name))
    return named or candidates
