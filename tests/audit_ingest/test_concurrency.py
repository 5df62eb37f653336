"""Batches processed on several waitress threads at once: process-wide state stays consistent."""

from __future__ import annotations

import gc
import threading

from edgeguard.falco.source import batch_gc_paused


def _hold_batch(entered: threading.Event, leave: threading.Event):
    with batch_gc_paused():
        entered.set()
        leave.wait(5)


def test_gc_stays_paused_until_the_last_overlapping_batch_ends():
    assert gc.isenabled()
    a_in, a_out, b_in, b_out = (threading.Event() for _ in range(4))
    a = threading.Thread(target=_hold_batch, args=(a_in, a_out))
    b = threading.Thread(target=_hold_batch, args=(b_in, b_out))
    try:
        a.start()
        assert a_in.wait(5)
        b.start()
        assert b_in.wait(5)
        a_out.set()  # batch A ends while batch B is still running
        a.join(5)
        assert not gc.isenabled(), "batch A's exit re-enabled the GC in the middle of batch B"
        b_out.set()
        b.join(5)
        assert gc.isenabled(), "the GC must be back on once no batch is running"
    finally:
        a_out.set()
        b_out.set()
        a.join(5)
        b.join(5)
        gc.enable()


def test_gc_paused_before_any_batch_stays_paused_after():
    gc.disable()
    try:
        with batch_gc_paused():
            with batch_gc_paused():
                pass
        assert not gc.isenabled()
    finally:
        gc.enable()
