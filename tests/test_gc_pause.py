"""The collector pause that reading and building share: nested, and across threads."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from xds_ingress import gc_pause


@pytest.fixture(autouse=True)
def _restore_collector() -> Iterator[None]:
    enabled = gc.isenabled()
    yield
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_the_last_pause_out_turns_the_collector_back_on() -> None:
    gc.enable()
    with gc_pause.paused():
        assert not gc.isenabled()
        with gc_pause.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    with gc_pause.paused():
        pass
    assert not gc.isenabled()


def test_overlapping_pauses_on_two_threads() -> None:
    # The file source pauses on its thread while the pipeline builds on the
    # event loop's: whichever ends first must not turn the collector on.
    gc.enable()
    inside = threading.Event()
    leave = threading.Event()

    def other() -> None:
        with gc_pause.paused():
            inside.set()
            leave.wait(timeout=10)

    thread = threading.Thread(target=other)
    with gc_pause.paused():
        thread.start()
        assert inside.wait(timeout=10)
    assert not gc.isenabled()  # the other thread's pause is still on
    leave.set()
    thread.join(timeout=10)
    assert gc.isenabled()
