"""Time as an input: clocks, absolute-deadline pacing, period statistics, real-time scheduling.

Every loop in duet gets its clock injected. Production code uses MonotonicClock (the
process monotonic clock, the one every sample's timestamp is taken from); tests use
FakeClock, whose time only moves when told to.
"""

from __future__ import annotations

import datetime as _dt
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from duet.stats import Samples


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic clock."""
        ...

    def sleep_until(self, t: float) -> None:
        """Return once now() >= t (immediately if t has passed)."""
        ...


class MonotonicClock:
    """The process monotonic clock (time.monotonic); all capture timestamps use it."""

    # Sleep until this long before the deadline, then spin: time.sleep overshoots by
    # 50-100 us on Linux and much more under load; the spin costs at most this much CPU.
    spin_s: float = 0.0003

    def now(self) -> float:
        return time.monotonic()

    def sleep_until(self, t: float) -> None:
        remaining = t - time.monotonic()
        if remaining > self.spin_s:
            time.sleep(remaining - self.spin_s)
        while time.monotonic() < t:
            pass


class FakeClock:
    """A clock for tests: time advances only through advance() or sleep_until().

    Thread-safe: a worker thread blocked in wait_until() wakes when another thread
    advances time past its target.
    """

    def __init__(self, start: float = 1000.0):
        self._t = float(start)
        self._cv = threading.Condition()

    def now(self) -> float:
        with self._cv:
            return self._t

    def advance(self, dt: float) -> None:
        with self._cv:
            self._t += float(dt)
            self._cv.notify_all()

    def set(self, t: float) -> None:
        with self._cv:
            self._t = max(self._t, float(t))
            self._cv.notify_all()

    def sleep_until(self, t: float) -> None:
        """Jump time forward to t (single-threaded loops under test)."""
        self.set(t)

    def wait_until(self, t: float, timeout: float | None = None) -> bool:
        """Block (in real time, up to timeout) until another thread advances time to t."""
        with self._cv:
            return self._cv.wait_for(lambda: self._t >= t, timeout=timeout)


def utc_now_iso(at: float | None = None) -> str:
    """The wall-clock time now (or `at`, seconds since the epoch), UTC, ISO 8601 to the second
    ('2026-11-25T17:40:00+00:00'): for metadata (episode start, checkpoint and report creation,
    lock holders) only; loops and sample timestamps use the monotonic Clock."""
    when = _dt.datetime.now(_dt.UTC) if at is None else _dt.datetime.fromtimestamp(at, _dt.UTC)
    return when.isoformat(timespec="seconds")


@dataclass
class PeriodSummary:
    """Figures of a paced loop. Period error = actual tick interval - nominal period."""

    ticks: int
    mean_rate_hz: float
    p50_error_ms: float
    p99_error_ms: float
    max_error_ms: float
    overruns: int

    def line(self) -> str:
        return (
            f"{self.mean_rate_hz:.2f} Hz over {self.ticks} ticks, period error p50 {self.p50_error_ms:.3f} ms "
            f"p99 {self.p99_error_ms:.3f} ms max {self.max_error_ms:.3f} ms, overruns {self.overruns}"
        )


class PeriodStats:
    """Records tick times (the first `capacity`) and summarises the absolute period error."""

    def __init__(self, period: float, capacity: int = 1_000_000):
        self.period = float(period)
        self._t = Samples(capacity)
        self.overruns = 0

    def record(self, t: float) -> None:
        self._t.add(t)

    def reset(self) -> None:
        self._t.reset()
        self.overruns = 0

    @property
    def ticks(self) -> int:
        return len(self._t)

    def summary(self) -> PeriodSummary:
        t = self._t.values()
        if len(t) < 2:
            return PeriodSummary(len(t), 0.0, 0.0, 0.0, 0.0, self.overruns)
        dt = np.diff(t)
        err = np.abs(dt - self.period) * 1e3
        return PeriodSummary(
            ticks=len(t),
            mean_rate_hz=float((len(t) - 1) / (t[-1] - t[0])),
            p50_error_ms=float(np.percentile(err, 50)),
            p99_error_ms=float(np.percentile(err, 99)),
            max_error_ms=float(err.max()),
            overruns=self.overruns,
        )


class Pacer:
    """Paces a loop on absolute deadlines: tick k is due at start + k * period.

    Never sleep-after-work: the work's duration does not shift later deadlines. A tick that
    starts more than one period late counts as an overrun and the missed deadlines are
    skipped (the grid is kept, so the loop falls back into phase instead of bursting).
    """

    def __init__(self, rate_hz: float, clock: Clock, stats: PeriodStats | None = None):
        if rate_hz <= 0:
            raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
        self.period = 1.0 / rate_hz
        self.clock = clock
        self.stats = stats or PeriodStats(self.period)
        self._next: float | None = None

    def start(self, t0: float | None = None) -> None:
        self._next = self.clock.now() if t0 is None else t0

    def wait(self) -> float:
        """Sleep until the next deadline; return the deadline (the tick's nominal time)."""
        if self._next is None:
            self.start()
        assert self._next is not None
        now = self.clock.now()
        if now > self._next + self.period:
            missed = int((now - self._next) // self.period)
            self.stats.overruns += 1
            self._next += missed * self.period
        self.clock.sleep_until(self._next)
        deadline = self._next
        self.stats.record(self.clock.now())
        self._next += self.period
        return deadline


def set_realtime(priority: int) -> str:
    """Scheduling of the calling thread (Linux, per thread), best effort.

    priority 1..99: SCHED_FIFO at that priority, so other processes cannot delay the thread;
    needs root, CAP_SYS_NICE or an rtprio limit (e.g. `@realtime - rtprio 98` in
    /etc/security/limits.conf). priority 0: SCHED_OTHER, dropping a real-time policy
    inherited from the creating thread. Returns "" when applied, else why not in one line
    (the caller runs on unprivileged).
    """
    if not hasattr(os, "sched_setscheduler"):
        return "SCHED_FIFO is not available on this platform" if priority > 0 else ""
    try:
        if priority > 0:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(int(priority)))
        elif os.sched_getscheduler(0) in (os.SCHED_FIFO, os.SCHED_RR):
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (OSError, ValueError) as e:
        return f"SCHED_FIFO priority {priority} refused ({e}); run as root, or set an rtprio limit"
    return ""


@contextmanager
def realtime(priority: int) -> Iterator[str]:
    """set_realtime(priority) for the calling thread inside the block (priority > 0; 0: no
    change), its previous policy restored after. Yields set_realtime's answer."""
    if priority <= 0 or not hasattr(os, "sched_getscheduler"):
        yield "" if priority <= 0 else set_realtime(priority)
        return
    before = (os.sched_getscheduler(0), os.sched_getparam(0))
    why = set_realtime(priority)
    try:
        yield why
    finally:
        if not why:
            os.sched_setscheduler(0, *before)
