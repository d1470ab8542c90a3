"""Dependencies stay inside ranges we have tested, and CI audits what it installs."""

from __future__ import annotations

import re
import tomllib

from peers import REPO

# A requirement with an upper bound (`<`) or an exact pin (`==`): a new major
# release cannot arrive unannounced with the next install.
_BOUNDED = re.compile(r"^[A-Za-z0-9._-]+(\[[^\]]*\])?\s*(==[^,;]+|.*<[^,;]+)")


def test_every_dependency_has_an_upper_bound() -> None:
    with (REPO / "pyproject.toml").open("rb") as file:
        project = tomllib.load(file)["project"]
    requirements = [
        *project["dependencies"],
        *(each for group in project["optional-dependencies"].values() for each in group),
    ]
    unbounded = [each for each in requirements if not _BOUNDED.match(each)]
    assert not unbounded, f"give these an upper bound: {unbounded}"


def test_ci_runs_the_audit() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert "make audit" in ci.split("make test", 1)[1]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^audit: venv\n\t\$\(BIN\)/python scripts/audit.py$", makefile, re.M)
