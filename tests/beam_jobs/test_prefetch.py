"""prefetch.Prefetcher: order, the bound on waiting outputs, errors, close."""

from __future__ import annotations

import threading
import time

import pytest

from beam_jobs.prefetch import Prefetcher


def _wait(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_outputs_in_submission_order_job_by_job():
    feed = Prefetcher(lambda n: (f"{n}.{i}" for i in range(n)), max_ready=2)
    for n in (3, 0, 2):
        feed.submit(n)
    assert feed.pending == 3
    assert list(feed.take(until=1)) == ["3.0", "3.1", "3.2"]
    assert feed.finished == 1
    assert list(feed.take(until=3)) == ["2.0", "2.1"]  # job 0 has no outputs
    assert feed.pending == 0
    feed.close()


def test_at_most_max_ready_outputs_wait_and_the_thread_runs_ahead():
    made = []

    def work(n):
        for i in range(n):
            made.append(i)
            yield i

    feed = Prefetcher(work, max_ready=3)
    feed.submit(10)
    # nothing taken: the thread made 3 that wait, plus the one it is blocked putting
    _wait(lambda: len(made) == 4)
    time.sleep(0.1)
    assert len(made) == 4
    it = feed.take(until=1)
    assert [next(it) for _ in range(2)] == [0, 1]
    _wait(lambda: len(made) == 6)  # taking two let it make two more
    assert list(it) == list(range(2, 10))
    feed.close()


def test_an_error_comes_after_the_outputs_made_before_it():
    def work(n):
        yield "a"
        if n == 1:
            raise ValueError("bad block 1")
        yield "b"

    feed = Prefetcher(work, max_ready=1)
    feed.submit(0)
    feed.submit(1)
    feed.submit(2)
    got = []
    with pytest.raises(ValueError, match="bad block 1"):
        for out in feed.take(until=3):
            got.append(out)
    assert got == ["a", "b", "a"]
    with pytest.raises(RuntimeError, match="submit after close"):
        feed.submit(3)


def test_close_stops_a_thread_blocked_on_a_full_queue():
    feed = Prefetcher(lambda n: iter(range(n)), max_ready=1)
    feed.submit(1000)
    _wait(lambda: feed._ready.full())
    feed.close()
    assert not feed._thread.is_alive()
    assert not any(t.name == "prefetch" and t.is_alive() for t in threading.enumerate())


def test_max_ready_must_be_positive():
    with pytest.raises(ValueError, match="max_ready must be >= 1; got 0"):
        Prefetcher(lambda n: iter(()), max_ready=0)
