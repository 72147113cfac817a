"""jaxprune.data.prefetch: order, errors, and no thread left behind."""

import threading
import time

import pytest

from jaxprune.data import prefetch


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "jaxprune-prefetch"]


@pytest.fixture(autouse=True)
def no_leaked_threads():
    assert not prefetch_threads()
    yield
    assert not prefetch_threads(), "a prefetch thread outlived its test"


@pytest.mark.parametrize("size", [1, 2, 5])
def test_order_preserved(size):
    assert list(prefetch(range(100), size)) == list(range(100))
    assert list(prefetch([], size)) == []


def test_runs_ahead_in_another_thread():
    produced: list[int] = []
    callers: set[str] = set()

    def source():
        for i in range(10):
            callers.add(threading.current_thread().name)
            produced.append(i)
            yield i

    stream = prefetch(source(), size=3)
    assert not produced  # nothing starts before the first next()
    assert next(stream) == 0
    deadline = time.monotonic() + 5
    while len(produced) < 5 and time.monotonic() < deadline:  # 1 taken + 3 queued + 1 held
        time.sleep(0.001)
    time.sleep(0.02)
    assert len(produced) == 5  # bounded: never more than size ahead
    assert callers == {"jaxprune-prefetch"}
    assert list(stream) == list(range(1, 10))


def test_exception_propagates_after_earlier_items():
    def source():
        yield 1
        yield 2
        raise KeyError("bad row")

    stream = prefetch(source())
    assert next(stream) == 1
    assert next(stream) == 2
    with pytest.raises(KeyError, match="bad row"):
        next(stream)
    with pytest.raises(StopIteration):
        next(stream)


def test_exception_from_iter_itself():
    class Broken:
        def __iter__(self):
            raise RuntimeError("cannot open")

    with pytest.raises(RuntimeError, match="cannot open"):
        list(prefetch(Broken()))


def test_close_stops_a_blocked_producer_and_closes_the_source():
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    stream = prefetch(endless(), size=2)
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    time.sleep(0.01)  # let the producer fill the queue and block on it
    stream.close()  # joins the thread (the fixture checks it is gone)
    assert closed.is_set()
    with pytest.raises(StopIteration):
        next(stream)


def test_early_break_ends_the_thread():
    for i in prefetch(iter(range(10**9)), size=2):
        if i == 3:
            break
    # the for loop held the only reference: the generator is collected and closed


def test_close_before_start_and_bad_size():
    prefetch(range(3)).close()  # never started: no thread
    with pytest.raises(ValueError, match="at least 1"):
        prefetch(range(3), size=0)
