import math

import numpy as np

from duet.clock import PeriodStats
from duet.stats import Samples


def test_samples_keep_first_capacity_by_default():
    s = Samples(3)
    for v in (1.0, 2.0, 3.0, 4.0):
        s.add(v)
    assert s.values().tolist() == [1.0, 2.0, 3.0] and s.count == 3 and len(s) == 3


def test_samples_ring_keeps_most_recent_oldest_first():
    s = Samples(3, ring=True)
    for v in range(1, 8):
        s.add(float(v))
    assert s.values().tolist() == [5.0, 6.0, 7.0]
    assert s.count == 7 and len(s) == 3 and s.max() == 7.0 and s.pct(50) == 6.0


def test_samples_percentiles_nan_while_empty_and_window_reset():
    s = Samples(10)
    assert all(math.isnan(x) for x in s.percentiles(50, 99)) and math.isnan(s.max())
    for v in range(11):
        s.add(float(v))
    assert s.percentiles_and_reset(0, 100) == [0.0, 9.0]
    assert s.count == 0 and math.isnan(s.pct(50))


def test_period_stats_records_the_first_capacity_ticks():
    p = PeriodStats(0.02, capacity=5)
    for k in range(10):
        p.record(k * 0.02)
    s = p.summary()
    assert p.ticks == 5 and s.ticks == 5 and np.isclose(s.mean_rate_hz, 50.0) and s.max_error_ms < 1e-6
