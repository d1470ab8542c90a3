"""What an HTTP/2 server announces in its SETTINGS frame, read off a real connection.

The coalescing scenario's minimum depends on the backend's
SETTINGS_MAX_CONCURRENT_STREAMS: ask the backend itself rather than assume.
"""

from __future__ import annotations

import socket
import time

import h2.config
import h2.connection
import h2.events
import h2.settings

from bench.procs import LOOPBACK


def max_concurrent_streams(port: int, *, timeout: float = 5.0) -> int | None:
    """The server's SETTINGS_MAX_CONCURRENT_STREAMS; None when it sets no limit."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    deadline = time.monotonic() + timeout
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(connection.data_to_send())
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.RemoteSettingsChanged):
                    changed = event.changed_settings.get(
                        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS
                    )
                    return None if changed is None else int(changed.new_value)
    raise TimeoutError(f"no SETTINGS frame from 127.0.0.1:{port}")
