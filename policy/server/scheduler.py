"""Action scheduling on the control-tick grid.

Ticks are numbered k = round((t - t0) / dt) from the server's first tick t0. A predicted
chunk is placed on that grid once, in the worker (`to_grid`): its action i is due at the
absolute time obs_stamp + t_rel[i]; the grid value at tick k is the linear interpolation of
the chunk at t0 + k * dt. Everything the tick thread then does is O(1) per tick (amortised):
index arithmetic into the grid chunk, an accumulator ring for temporal ensembling.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from duet.hardware.safety import LimitFault, SafetyLimits, limit_fault
from duet.policy.interface import ActionChunk

_EPS = 1e-6  # fraction of a tick: due times this close to a tick count as on it


class InvalidChunk(ValueError):
    """A chunk that must never reach the arm (non-finite values, an action beyond a joint limit
    by more than the fault margin, bad shapes): the server drops it and holds."""

    def __init__(self, msg: str, fault: LimitFault | None = None):
        super().__init__(msg)
        self.fault = fault  # the offending action (dim, row, value, limit), when one is to blame


class ChunkTimeError(InvalidChunk):
    """A chunk whose t_rel is no plan for the coming moments (not finite, not increasing,
    starting far from the inference, spanning far more than its length): the server drops it
    and the current plan goes on."""


def _check_shapes(a: np.ndarray, t_rel: np.ndarray, action_dim: int) -> None:
    if a.ndim != 2 or a.shape[1] != action_dim or a.shape[0] < 1:
        raise InvalidChunk(f"actions have shape {a.shape}, expected (horizon, {action_dim})")
    if t_rel.shape != (a.shape[0],):
        raise InvalidChunk(f"t_rel has shape {t_rel.shape}, expected ({a.shape[0]},)")


def fault_detail(fault: LimitFault, names, margin: np.ndarray, n_actions: int) -> str:
    """'left_follower.elbow (action dim 2) = 1e+06 in action 4 of 50, beyond its upper limit
    1.606 by more than the fault margin 0.3'; names: one per action dim, or None."""
    j = fault.joint
    dim = f"{names[j]} (action dim {j})" if names is not None and j < len(names) else f"action dim {j}"
    out = f"{dim} = {fault.value:.4g} in action {fault.row} of {n_actions}"
    if np.isfinite(fault.value):
        side = "upper" if fault.value > fault.limit else "lower"
        out += f", beyond its {side} limit {fault.limit:.4g} by more than the fault margin {float(margin[j]):.3g}"
    return out


@dataclass(frozen=True)
class ChunkRules:
    """What a chunk must satisfy before it is placed on the grid (checked in the worker)."""

    limits: SafetyLimits
    margin: np.ndarray  # (A,) action units: an action beyond a limit by more is a fault, not a clamp
    control_dt: float  # the policy's action spacing, s
    time_tolerance_s: float  # slack on where t_rel starts and how far it spans

    def check(self, chunk: ActionChunk, latency_s: float) -> None:
        """Raise InvalidChunk (values: the server holds) or ChunkTimeError (times: the current
        plan goes on). latency_s: observation capture to the end of the inference."""
        a = np.asarray(chunk.actions)
        t = np.asarray(chunk.t_rel, dtype=np.float64)
        _check_shapes(a, t, self.limits.n)
        fault = limit_fault(a, self.limits, self.margin)
        if fault is not None:
            kind = "a non-finite" if not np.isfinite(fault.value) else "an"
            raise InvalidChunk(f"{kind} action: {fault_detail(fault, None, self.margin, len(a))}", fault)
        tol = self.time_tolerance_s
        if not np.isfinite(t).all():
            raise ChunkTimeError(f"t_rel is not finite at action {int(np.flatnonzero(~np.isfinite(t))[0])}")
        if len(t) > 1 and not (np.diff(t) > 0).all():
            raise ChunkTimeError(
                f"t_rel is not increasing at action {int(np.flatnonzero(np.diff(t) <= 0)[0]) + 1}"
            )
        if t[0] < -tol:
            raise ChunkTimeError(f"t_rel starts {-t[0]:.4g} s before the observation (tolerance {tol} s)")
        if t[0] > latency_s + tol:
            raise ChunkTimeError(
                f"t_rel starts {t[0]:.4g} s after the observation, the inference took "
                f"{latency_s:.3g} s (tolerance {tol} s)"
            )
        span, expect = t[-1] - t[0], (len(t) - 1) * self.control_dt
        if span > expect + tol:
            raise ChunkTimeError(
                f"t_rel spans {span:.4g} s, {len(t)} actions at the policy's {self.control_dt} s "
                f"span {expect:.4g} s (tolerance {tol} s)"
            )


@dataclass(frozen=True)
class GridChunk:
    """A chunk resampled onto the tick grid: actions[j] is due at tick k0 + j."""

    k0: int
    actions: np.ndarray  # (n, A) float64

    @property
    def k_end(self) -> int:
        """First tick after the chunk."""
        return self.k0 + len(self.actions)

    def at(self, k: int) -> np.ndarray | None:
        j = k - self.k0
        if 0 <= j < len(self.actions):
            return self.actions[j]
        return None


def to_grid(chunk: ActionChunk, obs_stamp: float, t0: float, dt: float, action_dim: int) -> GridChunk:
    """Place a chunk on the tick grid. Raises InvalidChunk for NaN/inf, wrong shapes, or
    due times that are not strictly increasing."""
    a = np.asarray(chunk.actions)
    t_rel = np.asarray(chunk.t_rel, dtype=np.float64)
    _check_shapes(a, t_rel, action_dim)
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        bad = int((~np.isfinite(a)).any(axis=1).sum())
        raise InvalidChunk(f"model returned NaN/inf in {bad} of {len(a)} actions")
    if not np.isfinite(t_rel).all() or (len(t_rel) > 1 and not (np.diff(t_rel) > 0).all()):
        raise ChunkTimeError("t_rel is not finite and strictly increasing")
    due = (obs_stamp - t0) / dt + t_rel / dt  # in ticks
    if len(due) == 1:
        return GridChunk(int(round(due[0])), a.copy())
    k_first = math.ceil(due[0] - _EPS)
    k_last = math.floor(due[-1] + _EPS)
    if k_last < k_first:
        return GridChunk(k_first, np.zeros((0, action_dim)))
    ks = np.arange(k_first, k_last + 1, dtype=np.float64)
    j = np.clip(np.searchsorted(due, ks, side="right") - 1, 0, len(due) - 2)
    w = np.clip((ks - due[j]) / (due[j + 1] - due[j]), 0.0, 1.0)[:, None]
    return GridChunk(k_first, a[j] * (1.0 - w) + a[j + 1] * w)


class LatencyEstimate:
    """Observation-to-arrival latency in ticks: the max of the last `window` measurements
    (computed on arrival, so reading it is O(1))."""

    def __init__(self, window: int):
        self._recent: deque[float] = deque(maxlen=window)
        self.ticks = 0

    def reset(self) -> None:
        self._recent.clear()
        self.ticks = 0

    def add(self, latency_ticks: float) -> None:
        self._recent.append(latency_ticks)
        self.ticks = max(0, math.ceil(max(self._recent) - _EPS))


@dataclass
class Plan:
    """A chunk being executed (receding / async): from tick k_start, a window of n ticks."""

    chunk: GridChunk
    k_start: int
    window_end: int  # first tick after the execution window (<= chunk.k_end)

    def at(self, k: int) -> np.ndarray | None:
        return self.chunk.at(k)

    def at_clamped(self, k: int) -> np.ndarray:
        """The chunk's action at k, or its last action once it has run out (blend source)."""
        return self.chunk.actions[min(max(k - self.chunk.k0, 0), len(self.chunk.actions) - 1)]


class EnsembleBuffer:
    """Temporal ensembling on the tick grid.

    Each tick slot accumulates sum(w * a) and sum(w) over the predictions for that tick; the
    r-th prediction of a tick (r = 0 for the oldest) gets w = exp(-k * r), as in ACT. Adding
    a chunk is O(horizon * A) vectorised (once per arrival); reading a tick is O(A).
    """

    def __init__(self, capacity: int, action_dim: int, k: float):
        self.capacity = int(capacity)
        self.k = float(k)
        self._sum = np.zeros((self.capacity, action_dim))
        self._w = np.zeros(self.capacity)
        self._n = np.zeros(self.capacity, dtype=np.int64)
        self._next_clear: int | None = None  # ticks before this are cleared

    def reset(self) -> None:
        self._sum[:] = 0
        self._w[:] = 0
        self._n[:] = 0
        self._next_clear = None

    def _clear_through(self, k: int) -> None:
        """Clear every slot for ticks < k + 1 not cleared yet (ticks may be skipped)."""
        start = k if self._next_clear is None else self._next_clear
        if k + 1 - start >= self.capacity:
            self.reset()
        else:
            for kk in range(start, k + 1):
                s = kk % self.capacity
                self._sum[s] = 0
                self._w[s] = 0
                self._n[s] = 0
        self._next_clear = k + 1

    def add(self, chunk: GridChunk, k_now: int) -> int:
        """Add the chunk's actions for ticks >= k_now; returns how many were stale (< k_now)."""
        lo = max(chunk.k0, k_now)
        hi = min(chunk.k_end, k_now + self.capacity)
        stale = min(max(k_now - chunk.k0, 0), len(chunk.actions))
        if hi <= lo:
            return stale
        slots = np.arange(lo, hi) % self.capacity
        w = np.exp(-self.k * self._n[slots])
        self._sum[slots] += w[:, None] * chunk.actions[lo - chunk.k0 : hi - chunk.k0]
        self._w[slots] += w
        self._n[slots] += 1
        return stale

    def take(self, k: int) -> np.ndarray | None:
        """The ensembled action for tick k (None when no prediction covers it); consumes the slot."""
        if self._next_clear is not None and k < self._next_clear:
            return None  # already consumed
        s = k % self.capacity
        out = self._sum[s] / self._w[s] if self._w[s] > 0 else None
        self._clear_through(k)
        return out
