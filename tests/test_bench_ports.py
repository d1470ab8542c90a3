"""The benchmark's port picker (bench/ports.py)."""

from __future__ import annotations

from bench.ports import free_port


def test_ports_asked_for_before_any_is_bound_all_differ() -> None:
    """An Envoy's admin and listener ports are picked before Envoy binds either."""
    # 1000 draws from the kernel's ~28k ephemeral ports repeat one almost always.
    ports = [free_port() for _ in range(1000)]
    assert len(set(ports)) == len(ports)
