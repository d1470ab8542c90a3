"""Pausing CPython's cyclic garbage collector around bulk work.

Reading a 10k-Service folder or translating it allocates millions of
objects that all stay alive (the store, the IR) and form no garbage cycles.
The collector still walks the growing heap again and again while they are
made: measured at 10k Services, half of translate's time and most of the
file source's own time were collections that found nothing.

The collector's switch is process state, and the file source pauses it on
its thread while the pipeline may pause it on the event loop; so the pause
is counted here, in the one place that touches the switch, and the last
one out restores what the first one in found.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator


class _Pauses:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._was_enabled = False

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self._was_enabled:
                    gc.enable()


# One per process, as the collector is.
_PAUSES = _Pauses()


def paused() -> contextlib.AbstractContextManager[None]:
    """No cyclic collection inside; garbage cycles made meanwhile are collected after."""
    return _PAUSES.paused()
