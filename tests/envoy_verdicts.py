"""`envoy --mode validate` on several bootstraps at once, each in an Envoy process of its own."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

from xds_ingress.envoy_launcher import envoy_binary


def validate_all(
    folder: Path, documents: Mapping[str, str], *, timeout: float = 120
) -> dict[str, tuple[int, str]]:
    """name → (Envoy's exit code, its output) for each bootstrap text (JSON or YAML)."""
    running = {}
    for name, text in documents.items():
        path = folder / (f"{name}.json" if text.startswith("{") else f"{name}.yaml")
        path.write_text(text)
        running[name] = subprocess.Popen(
            [str(envoy_binary()), "--mode", "validate", "-c", str(path), "--log-level", "warn"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    verdicts = {}
    for name, process in running.items():
        output, _ = process.communicate(timeout=timeout)
        verdicts[name] = (process.returncode, output)
    return verdicts
