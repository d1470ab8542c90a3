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

A pause does not make the collection it skips free: the objects made
during it are still young when it ends, and the collector's next passes
walk them all (measured at 10k Services: 0.3-1 s after each of the read
and the first build). A pause whose objects live as long as the process (a
cold start's store, IR and snapshot) can ask for them to be frozen
(gc.freeze) as the last pause ends, so that no pass ever walks them.
Frozen objects that die are still freed by reference counting; only
garbage cycles among them would stay, and bulk reading and building make
none.
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
        self._freeze = False

    @contextlib.contextmanager
    def paused(self, *, freeze: bool) -> Iterator[None]:
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
                # Asked for by this pause or an overlapping one: the last
                # one out freezes, before the collector can run.
                self._freeze = self._freeze or freeze
                if self._depth == 0:
                    if self._freeze:
                        gc.freeze()
                        self._freeze = False
                    if self._was_enabled:
                        gc.enable()


# One per process, as the collector is.
_PAUSES = _Pauses()


def paused(*, freeze: bool = False) -> contextlib.AbstractContextManager[None]:
    """No cyclic collection inside; garbage cycles made meanwhile are collected after.

    `freeze`: what was made inside lives on; freeze the heap when the last
    overlapping pause ends rather than let the collector walk it again.
    """
    return _PAUSES.paused(freeze=freeze)
