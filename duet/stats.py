"""Samples: the one bounded record of float samples (tick times, latencies, jumps).

Recording is O(1) and never allocates; percentiles are computed on demand. Thread-safe: a
loop thread records while a diagnostics thread summarises.
"""

from __future__ import annotations

import threading

import numpy as np


class Samples:
    """A fixed-capacity record of float samples.

    ring=False keeps the first `capacity` samples (later ones are dropped: a record "since
    start" that stays bounded); ring=True keeps the most recent `capacity` (a sliding view).
    """

    def __init__(self, capacity: int = 100_000, ring: bool = False):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self._v = np.empty(int(capacity), dtype=np.float64)
        self._ring = bool(ring)
        self._n = 0  # total added since reset (stored: min(_n, capacity))
        self._lock = threading.Lock()

    def add(self, v: float) -> None:
        with self._lock:
            if self._n < len(self._v):
                self._v[self._n] = v
            elif self._ring:
                self._v[self._n % len(self._v)] = v
            else:
                return
            self._n += 1

    def reset(self) -> None:
        with self._lock:
            self._n = 0

    @property
    def count(self) -> int:
        """Samples added since reset and kept (ring: every sample added, kept or overwritten)."""
        return self._n

    def __len__(self) -> int:
        """Samples stored now (at most capacity)."""
        return min(self._n, len(self._v))

    def values(self) -> np.ndarray:
        """A copy of the stored samples, oldest first."""
        with self._lock:
            return self._values()

    def _values(self) -> np.ndarray:
        cap = len(self._v)
        if self._n <= cap:
            return self._v[: self._n].copy()
        k = self._n % cap  # ring, wrapped: the oldest sample sits at k
        return np.concatenate([self._v[k:], self._v[:k]])

    def percentiles(self, *qs: float) -> list[float]:
        """Percentiles (0..100) of the stored samples; NaN each while empty."""
        return _percentiles(self.values(), qs)

    def percentiles_and_reset(self, *qs: float) -> list[float]:
        """percentiles() of the window so far, then start a new window (atomically)."""
        with self._lock:
            v = self._values()
            self._n = 0
        return _percentiles(v, qs)

    def pct(self, q: float) -> float:
        return self.percentiles(q)[0]

    def max(self) -> float:
        v = self.values()
        return float(v.max()) if len(v) else float("nan")


def _percentiles(v: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    if not len(v):
        return [float("nan")] * len(qs)
    return [float(x) for x in np.percentile(v, qs)]
