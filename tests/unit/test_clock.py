import numpy as np

from duet.clock import FakeClock, Pacer


def test_pacer_keeps_absolute_deadlines_despite_work():
    clock = FakeClock(start=0.0)
    pacer = Pacer(50.0, clock)
    pacer.start(0.0)
    deadlines = []
    for k in range(100):
        deadlines.append(pacer.wait())
        clock.advance(0.015 if k % 2 else 0.005)  # work of varying length, < one period
    assert np.allclose(np.diff(deadlines), 0.02)
    s = pacer.stats.summary()
    assert s.overruns == 0 and abs(s.mean_rate_hz - 50.0) < 1e-6 and s.max_error_ms < 1e-6


def test_pacer_overrun_skips_missed_deadlines_and_stays_on_grid():
    clock = FakeClock(start=0.0)
    pacer = Pacer(50.0, clock)
    pacer.start(0.0)
    pacer.wait()
    clock.advance(0.065)  # a long stall: three deadlines missed
    d = pacer.wait()
    assert pacer.stats.overruns == 1
    assert abs(d / 0.02 - round(d / 0.02)) < 1e-9  # still on the 20 ms grid
    assert pacer.wait() == d + 0.02
