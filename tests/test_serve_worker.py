"""The server's worker thread (mlx_pn.serve.worker): every job on one thread, in turn; errors and early closes."""

import threading
import time

import pytest

from mlx_pn.serve.worker import Worker


def test_jobs_run_on_one_thread_in_turn_and_errors_reach_the_caller():
    w = Worker()
    threads = set()

    def count(n):
        for i in range(n):
            threads.add(threading.get_ident())
            yield i

    results = []
    callers = [threading.Thread(target=lambda: results.append(list(w.stream(lambda: count(50))))) for _ in range(4)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(timeout=30)
    assert results == [list(range(50))] * 4
    assert len(threads) == 1 and threading.get_ident() not in threads  # the worker's own thread, for every caller
    assert w.call(lambda: 6 * 7) == 42

    def broken():
        yield 1
        raise RuntimeError("weights on fire")

    gen = w.stream(broken)
    assert next(gen) == 1
    with pytest.raises(RuntimeError, match="weights on fire"):
        next(gen)
    with pytest.raises(ZeroDivisionError):
        w.call(lambda: 1 / 0)
    assert w.call(lambda: "still up") == "still up"


def test_closing_a_stream_early_stops_its_generator():
    w = Worker()
    made = []

    def slow():
        for i in range(1000):
            made.append(i)
            time.sleep(0.001)
            yield i

    gen = w.stream(slow)
    assert next(gen) == 0
    gen.close()
    assert w.call(lambda: len(made)) < 1000  # the worker moved on to the next job long before the end
