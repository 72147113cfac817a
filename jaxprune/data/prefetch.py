"""Run an input pipeline ahead of the training loop in a background thread.

    stream = prefetch(to_device(b) for b in batcher(epoch))  # size=2 batches ahead
    for batch in stream:
        state, metrics = step(state, batch)  # the thread fills the queue meanwhile

The training loop blocks on every step's result (its non-finite check reads a device
scalar); without a prefetcher the host builds the next batch only after that, so a step
costs the accelerator's time plus the host's. With one, the next ``size`` batches are built
(and, when the producer places them, copied to the devices) while the step runs.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_ITEM, _DONE, _ERROR = 0, 1, 2


def prefetch(iterable: Iterable[T], size: int = 2) -> Generator[T, None, None]:
    """The items of ``iterable``, in order, produced by a daemon thread up to ``size`` ahead.

    Args:
      iterable: the producer; it is iterated (and, if it has ``close``, closed) in the
        background thread only.
      size: the queue's bound, in items (batches): at most ``size`` finished items wait for
        the consumer, plus the one the thread is building. Memory grows with it; 2 hides a
        producer whose time per item is up to the consumer's, with room for jitter.

    Returns:
      A generator. The thread starts at the first ``next``. An exception the producer raises
      is raised here, at the item where it happened (earlier items are delivered first).
      Closing the generator (``close()``, ``break`` out of a ``for`` loop whose generator is
      then collected, or the end of the items) stops the thread and waits for it: it finishes
      the item it is building (seconds: one item's production time), closes ``iterable``'s
      iterator and exits, so no thread outlives the generator.

    Raises:
      ValueError: ``size`` < 1.
    """
    if size < 1:
        raise ValueError(f"prefetch size must be at least 1, got {size}")
    return _prefetch(iterable, size)


def _prefetch(iterable: Iterable[T], size: int) -> Generator[T, None, None]:
    slots: queue.Queue[tuple[int, Any]] = queue.Queue(maxsize=size)
    stop = threading.Event()

    def produce() -> None:
        it: Iterator[T] | None = None
        try:
            it = iter(iterable)
            for item in it:
                if stop.is_set():
                    return
                slots.put((_ITEM, item))
                if stop.is_set():
                    return
            slots.put((_DONE, None))
        except BaseException as error:  # handed to the consumer, raised there
            if not stop.is_set():
                slots.put((_ERROR, error))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="jaxprune-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == _ITEM:
                yield value
            elif kind == _ERROR:
                raise value
            else:
                return
    finally:
        stop.set()
        # The producer may be blocked on a full queue: empty it. It then puts at most one
        # more item (it checks ``stop`` before and after each put), which always fits.
        while True:
            try:
                slots.get_nowait()
            except queue.Empty:
                break
        thread.join()


__all__ = ["prefetch"]
