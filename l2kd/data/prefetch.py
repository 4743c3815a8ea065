"""Batches prepared off the training loop's critical path.

Collating a batch (padding, target positions, host tensors) is Python work; done inline it runs
while the accelerator idles whenever the step is shorter than that work. `prefetch` runs the batch
producer in a background thread a few batches ahead (torch releases the GIL in its kernels, so the
two overlap even on a CPU). With a GPU the batches are pinned there, so the loop's
`.to(device, non_blocking=True)` copies without blocking the host.

Only plans fixed in advance are prefetched: a sampler that picks each batch with the current model
(MT-Uncertainty) must run in step with training, never ahead of it.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
_DONE = object()


def prefetch(items: Iterable[T], depth: int = 2, prepare: Callable[[T], T] | None = None) -> Iterator[T]:
    """Yield `items` (each passed through `prepare`) produced `depth` ahead in a background thread.
    An exception in the producer is raised in the consumer; leaving the loop early stops the producer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        """Hand one item over; False once the consumer has left."""
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(prepare(item) if prepare is not None else item):
                    return
            put(_DONE)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put(e)

    thread = threading.Thread(target=produce, name="l2kd-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)
