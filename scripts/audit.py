"""`make audit`: pip-audit over the installed environment, judged in one place.

pip-audit asks PyPI's JSON API which releases have known vulnerabilities.
Fails (exit 1) when any installed distribution has one. When the advisory
service cannot be reached (a registry mirror that serves only the simple
index answers "not found" for every package), nothing was audited: that is
said loudly, on stderr and in the summary line, and exits 0 unless
--require-service is given, because a CI without that service must still
be able to land changes. Our own editable package is not on PyPI and is
skipped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

PIP_AUDIT = Path(sys.executable).parent / "pip-audit"


def run_pip_audit() -> dict[str, Any]:
    result = subprocess.run(
        [str(PIP_AUDIT), "--skip-editable", "--progress-spinner", "off", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    # Exit status 1 means "vulnerabilities found"; the JSON says which.
    if result.returncode not in (0, 1) or not result.stdout.strip():
        sys.stderr.write(result.stderr)
        raise SystemExit(f"audit: pip-audit failed with status {result.returncode}")
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--require-service",
        action="store_true",
        help="fail when the advisory service could not be asked about every dependency",
    )
    args = parser.parse_args(argv)
    dependencies = run_pip_audit()["dependencies"]
    vulnerable = [d for d in dependencies if d.get("vulns")]
    audited = [d for d in dependencies if "skip_reason" not in d]
    skipped = [d for d in dependencies if "skip_reason" in d]
    for dependency in vulnerable:
        for vuln in dependency["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions", [])) or "no fixed release"
            print(
                f"VULNERABLE {dependency['name']} {dependency['version']}: {vuln['id']} "
                f"(fixed in {fixes})"
            )
    if skipped and not audited:
        sys.stderr.write(
            f"audit: WARNING: none of {len(skipped)} dependencies could be audited: "
            "the advisory service is unreachable from here "
            f"({skipped[0]['skip_reason']})\n"
        )
    elif skipped:
        names = ", ".join(d["name"] for d in skipped)
        sys.stderr.write(f"audit: WARNING: not audited: {names}\n")
    print(
        f"audit: {len(audited)} audited, {len(vulnerable)} vulnerable, {len(skipped)} not audited"
    )
    if vulnerable:
        return 1
    if skipped and args.require_service:
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
