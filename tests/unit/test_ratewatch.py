"""RateWatch: the achieved rate of a paced loop over a window, as OK / WARN / ERROR."""

import pytest

from duet.errors import ConfigError
from duet.ratewatch import ERROR, OK, WARN, RateWatch, RateWatchConfig


def run(watch, period, seconds, t0=0.0):
    n = int(round(seconds / period))
    for k in range(n):
        watch.tick(t0 + k * period)
    return t0 + (n - 1) * period


def test_full_rate_is_ok_and_unknown_before_a_full_window():
    w = RateWatch(50.0, what="teleop loop")
    t = run(w, 0.02, 0.5)
    assert w.rate(t) is None and w.check(t) == (OK, "")
    t = run(w, 0.02, 3.0, t0=t + 0.02)
    assert w.rate(t) == pytest.approx(50.0, abs=1.0)
    assert w.check(t) == (OK, "")


@pytest.mark.parametrize("period,level", [(0.022, WARN), (0.04, ERROR), (0.0205, OK)])
def test_levels_follow_the_thresholds_and_name_the_rate(period, level):
    w = RateWatch(50.0, RateWatchConfig(window_s=1.0, warn_below=0.95, error_below=0.8), what="arm loop")
    t = run(w, period, 3.0)
    got, message = w.check(t)
    assert got == level
    if level != OK:
        assert f"at {1 / period:.1f} Hz" in message
        assert message.startswith("arm loop at") and "50 Hz" in message


def test_a_stalled_loop_falls_to_error_when_checked_later():
    w = RateWatch(50.0)
    t = run(w, 0.02, 2.0)
    assert w.check(t)[0] == OK
    level, message = w.check(t + 0.9)  # no tick for 0.9 s
    assert level == ERROR and w.rate(t + 0.9) < 6.0 and message.startswith("loop at")


def test_config_is_validated():
    with pytest.raises(ConfigError, match="error_below"):
        RateWatchConfig(warn_below=0.8, error_below=0.9)
    with pytest.raises(ConfigError, match="window_s"):
        RateWatchConfig(window_s=0)


def test_a_level_falls_back_only_after_a_whole_better_window():
    w = RateWatch(50.0)
    t = run(w, 0.022, 2.0)  # 45 Hz, then a clean 50 Hz
    assert w.check(t)[0] == WARN
    levels = []
    for k in range(1, 150):
        w.tick(t + 0.02 * k)
        levels.append(w.check(t + 0.02 * k)[0])
    first_ok = levels.index(OK)
    assert all(lv == WARN for lv in levels[:first_ok]) and all(lv == OK for lv in levels[first_ok:])
    assert first_ok * 0.02 >= 1.0  # a whole window above the threshold first
