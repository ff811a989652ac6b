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


def test_set_realtime_refused_says_why_and_realtime_restores_the_policy(monkeypatch):
    import os

    from duet.clock import realtime, set_realtime

    calls = []
    monkeypatch.setattr(os, "sched_getscheduler", lambda pid: os.SCHED_OTHER, raising=False)
    monkeypatch.setattr(os, "sched_getparam", lambda pid: os.sched_param(0), raising=False)

    def refuse(pid, policy, param):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "sched_setscheduler", refuse, raising=False)
    why = set_realtime(80)
    assert "SCHED_FIFO priority 80 refused" in why and "rtprio" in why and "\n" not in why
    assert set_realtime(0) == ""  # already SCHED_OTHER: nothing to drop
    monkeypatch.setattr(
        os,
        "sched_setscheduler",
        lambda pid, policy, param: calls.append((policy, param.sched_priority)),
        raising=False,
    )
    with realtime(80) as why:
        assert why == "" and calls == [(os.SCHED_FIFO, 80)]
    assert calls[-1] == (os.SCHED_OTHER, 0)  # restored on exit
