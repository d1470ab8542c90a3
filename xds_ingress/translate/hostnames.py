"""Which names a certificate covers, with TLS wildcard rules.

A wildcard stands for exactly one whole label, as certificate checks have it
(RFC 6125 section 6.4.3) and as Ingress hosts do: "*.example.com" covers
"a.example.com", but neither "example.com" nor "a.b.example.com". A wildcard
host covers itself, so a certificate for "*.example.com" serves an Ingress
rule for "*.example.com".
"""

from __future__ import annotations

from collections.abc import Iterable


def covers(pattern: str, host: str) -> bool:
    return pattern == host or (is_wildcard(pattern) and wildcard_for(host) == pattern)


def covered_by_any(patterns: Iterable[str], host: str) -> bool:
    return any(covers(pattern, host) for pattern in patterns)


def wildcard_for(host: str) -> str | None:
    """The one wildcard name that could cover `host` ("*.example.com" for "a.example.com")."""
    label, dot, parent = host.partition(".")
    if not dot or label in ("", "*") or "." not in parent:
        # Clients refuse a wildcard directly under a top-level domain
        # ("*.com"), so such a name covers nothing.
        return None
    return f"*.{parent}"


def is_wildcard(name: str) -> bool:
    return name.startswith("*.")
