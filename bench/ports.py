"""Loopback ports for the benchmark's children, picked before they bind them.

Apart from procs.py so that the tests, which run without the bench extra
(psutil), can check it.
"""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"

# Every port handed out in this process. Two ports asked for before either
# is bound (an Envoy's admin and listener) are both free, so the kernel may
# offer the same one twice; tests/peers.py met exactly that in CI.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback TCP port that was free a moment ago and was never handed out here."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((LOOPBACK, 0))
            port: int = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("the kernel keeps offering ports already handed out")
