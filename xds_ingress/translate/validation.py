"""Checks on the parts of an Ingress rule a user types: hosts and paths."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from xds_ingress import ir

_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_SUBDOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
# Whitespace and control characters cannot be matched in a request line, and
# "?" / "#" would start a query or fragment: such a path never matches.
_BAD_PATH_CHARACTER = re.compile(r"[\s\x00-\x1f\x7f?#]")

PATH_TYPES: dict[str, ir.PathMatchType] = {
    "Exact": ir.PathMatchType.EXACT,
    "Prefix": ir.PathMatchType.PREFIX,
    "ImplementationSpecific": ir.PathMatchType.STRING_PREFIX,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Invalid:
    """Why a value was refused: a condition reason and a message for the user."""

    reason: str
    message: str


def check_host(host: str) -> Invalid | None:
    """A DNS-1123 subdomain, optionally with "*." as its whole first label."""
    name = host.removeprefix("*.")
    if len(host) > 253 or not _SUBDOMAIN.fullmatch(name):
        return Invalid(
            reason="InvalidHost",
            message=f"host {host!r} is not a valid DNS name: use lowercase letters, digits, "
            "'-' and '.', with '*.' allowed only as a leading wildcard label",
        )
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return None
    return Invalid(reason="InvalidHost", message=f"host {host!r} is an IP address; use a DNS name")


def path_match(path: object, path_type: object) -> ir.PathMatch | Invalid:
    """The IR match for an Ingress path, with Kubernetes' normalisation."""
    # pathType is required in networking.k8s.io/v1; without it, behave as the
    # older API did (ImplementationSpecific) rather than drop the rule.
    type_name = "ImplementationSpecific" if path_type is None else path_type
    match_type = PATH_TYPES.get(type_name) if isinstance(type_name, str) else None
    if match_type is None:
        return Invalid(
            reason="InvalidPathType",
            message=f"pathType {path_type!r} is not one of Exact, Prefix, ImplementationSpecific",
        )
    if path is None and match_type is ir.PathMatchType.STRING_PREFIX:
        path = "/"
    if not isinstance(path, str) or not path.startswith("/"):
        return Invalid(reason="InvalidPath", message=f"path {path!r} must start with '/'")
    if _BAD_PATH_CHARACTER.search(path):
        return Invalid(
            reason="InvalidPath",
            message=f"path {path!r} contains whitespace, a control character, '?' or '#'",
        )
    if match_type is ir.PathMatchType.PREFIX:
        # Prefix matching is per path element, so "/foo/" means "/foo".
        path = path.rstrip("/") or "/"
    return ir.PathMatch(type=match_type, value=path)
