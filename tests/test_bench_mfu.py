"""tools.bench's MFU (issue 23): the matmul peak is measured between the rounds and the best kept, so a peak
measured once while the machine was loaded cannot make MFU read 215%."""

from __future__ import annotations


def test_the_peak_is_measured_every_round_and_the_best_kept():
    from tools.bench import run_rounds

    order = []

    def job(name, t):
        def run(steps):
            order.append(name)
            return [t] * steps
        return run

    rates = iter([40e9, 120e9, 90e9])  # the first reading under load, the machine free in round 2

    def measure():
        order.append("peak")
        return next(rates)

    times = {"a": [], "b": []}
    per_round, peak = run_rounds([("a", job("a", 0.1)), ("b", job("b", 0.2))], times, 3, 2, measure, 30e9)
    assert peak == 120e9
    assert order == ["a", "b", "peak", "b", "a", "peak", "a", "b", "peak"]  # interleaved, order rotated
    assert per_round == {"a": [0.1] * 3, "b": [0.2] * 3} and len(times["a"]) == 6
    # --peak-tflops: no measuring, the given peak kept
    assert run_rounds([("a", job("a", 0.1))], {"a": []}, 2, 1, None, 5e12)[1] == 5e12
