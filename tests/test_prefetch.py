"""Batches collated ahead in a thread: same items in the same order, errors surface, early exit stops it."""

import threading
import time

import pytest

from l2kd.data.prefetch import prefetch


def test_same_items_in_the_same_order():
    assert list(prefetch(range(50), depth=3, prepare=lambda x: x * 2)) == [2 * x for x in range(50)]


def test_a_producer_error_is_raised_in_the_loop():
    def items():
        yield 1
        raise ValueError("bad batch")

    got = []
    with pytest.raises(ValueError, match="bad batch"):
        for x in prefetch(items()):
            got.append(x)
    assert got == [1]


def test_leaving_the_loop_stops_the_producer():
    produced = []

    def items():
        for i in range(10_000):
            produced.append(i)
            yield i

    for x in prefetch(items(), depth=2):
        if x == 3:
            break
    time.sleep(0.3)
    assert len(produced) < 10 and not any(t.name == "l2kd-prefetch" for t in threading.enumerate())
