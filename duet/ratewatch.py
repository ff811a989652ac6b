"""Sustained tick-rate loss as a diagnostic level (OK / WARN / ERROR), on the injected clock.

A paced loop (duet.clock.Pacer) that cannot keep up does not fail: it runs slower (a slow
or lossy bus: retries and late replies stretch every tick) and counts overruns. RateWatch
turns that into a level a user sees, with the measured rate in the message:

    watch = RateWatch(50.0, RateWatchConfig(), what="teleop loop")
    watch.tick(clock.now())              # once per tick, at the tick's start
    level, message = watch.check(clock.now())

The achieved rate is measured at ``now`` over the ticks within the last ``window_s``:
(ticks - 1) / (now - the first of them), so a loop that stalled since its last tick shows as
a rate falling toward 0. A level rises at once and falls back only after the rate stayed
above its threshold for a whole window (no WARN / OK flapping on a lossy bus). Until a full
window has passed since the first tick (or reset) the rate is unknown and the level OK.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

from duet.config import field
from duet.errors import ConfigError

OK, WARN, ERROR = 0, 1, 2
LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR"}


@dataclass
class RateWatchConfig:
    """When a loop's achieved rate is reported as too low. Defaults: WARN below 95 % of the
    target (47.5 Hz of 50: a lossy bus whose retries cost a tick or two a second), ERROR below
    80 % (40 Hz: a bus that cannot fit its traffic into the period)."""

    window_s: float = field(
        1.0, help="the achieved tick rate is measured over this long, s (the loop's clock)"
    )
    warn_below: float = field(
        0.95, help="WARN when the rate over the window is below this fraction of the target rate"
    )
    error_below: float = field(
        0.80, help="ERROR when the rate over the window is below this fraction of the target rate"
    )

    def __post_init__(self):
        if self.window_s <= 0:
            raise ConfigError(f"rate watch: window_s must be > 0, got {self.window_s}")
        if not 0.0 <= self.error_below <= self.warn_below <= 1.0:
            raise ConfigError(
                f"rate watch: need 0 <= error_below ({self.error_below}) <= warn_below ({self.warn_below}) <= 1"
            )


class RateWatch:
    """The achieved rate of a loop over a sliding window and its level. Thread-safe: tick()
    from the loop, check() from the loop or from a diagnostics timer."""

    def __init__(self, target_hz: float, cfg: RateWatchConfig | None = None, what: str = "loop"):
        if target_hz <= 0:
            raise ValueError(f"target_hz must be > 0, got {target_hz}")
        self.target_hz = float(target_hz)
        self.cfg = cfg or RateWatchConfig()
        self.what = what
        self._ticks: deque[float] = deque()
        self._since: float | None = None  # first tick after construction / reset
        self.level = OK
        self.message = ""
        self._better_since: float | None = None  # since when the rate is better than .level says
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        self._ticks.clear()
        self._since = None
        self.level, self.message = OK, ""
        self._better_since = None

    def tick(self, now: float) -> None:
        with self._lock:
            if self._since is None:
                self._since = now
            self._ticks.append(now)
            self._trim(now)

    def _trim(self, now: float) -> None:
        start = now - self.cfg.window_s
        while self._ticks and self._ticks[0] <= start:
            self._ticks.popleft()

    def rate(self, now: float) -> float | None:
        """Ticks per second over the last window_s, or None before a full window."""
        with self._lock:
            return self._rate(now)

    def _rate(self, now: float) -> float | None:
        if self._since is None or now - self._since < self.cfg.window_s:
            return None
        self._trim(now)
        if len(self._ticks) < 2 or now <= self._ticks[0]:
            return 0.0
        return (len(self._ticks) - 1) / (now - self._ticks[0])

    def check(self, now: float) -> tuple[int, str]:
        """(level, message) now; also kept in .level / .message. The message names the
        measured rate, the window and the threshold crossed ("" when OK)."""
        with self._lock:
            return self._check(now)

    def _check(self, now: float) -> tuple[int, str]:
        rate = self._rate(now)
        level, message = OK, ""
        w = self.cfg.window_s
        if rate is not None:
            frac = rate / self.target_hz
            for lvl, below in ((ERROR, self.cfg.error_below), (WARN, self.cfg.warn_below)):
                if frac < below:
                    level = lvl
                    message = (
                        f"{self.what} at {rate:.1f} Hz over the last {w:g} s, below {below * 100:.0f} % "
                        f"of {self.target_hz:g} Hz (a slow or lossy bus, or an overloaded CPU: check the "
                        f"bus counters)"
                    )
                    break
        if level >= self.level:
            self._better_since = None
            self.level, self.message = level, message
        else:  # better: fall back only once it has stayed better for a whole window
            if self._better_since is None:
                self._better_since = now
            if now - self._better_since >= w:
                self._better_since = None
                self.level, self.message = level, message
            else:
                below = self.cfg.error_below if self.level == ERROR else self.cfg.warn_below
                self.message = (
                    f"{self.what} at {rate:.1f} Hz over the last {w:g} s, below {below * 100:.0f} % "
                    f"of {self.target_hz:g} Hz within the last {w:g} s"
                )
        return self.level, self.message
