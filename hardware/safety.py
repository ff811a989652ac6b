"""The safety function: the one gate between every command source and the bus.

Teleop (leader -> follower), the policy server and episode replay all send their targets
through `safe_command` before anything reaches a servo; the arm backends call it again in
`write` against the last command they sent. It is pure (no I/O, no state): the caller
keeps `last` and decides what to do on rejection (hold the last command and report).

Rules, per joint, in this order:
1. a target that is not finite (NaN / inf) or has the wrong shape is rejected
   (UnsafeCommandError), never "repaired";
2. the target is clamped to [lower, upper];
3. the change from `last` is limited to max_step (last=None: no step limit, clamp only).

When `last` itself lies outside [lower, upper] (an arm switched on outside its soft
limits), the step limit wins: the command moves from `last` toward the range by at most
max_step per tick, never jumps into it.

`limit_fault` is the check for a source that plans ahead (a policy's action chunk): a
target beyond a limit by more than a margin is no near-miss to clamp but a fault (clamping
1e6 would drive the joint to its limit); the caller drops the plan and holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from duet.errors import DuetError


class UnsafeCommandError(DuetError):
    """A command was rejected (NaN/inf or wrong shape): the caller holds its last command."""


@dataclass(frozen=True)
class SafetyLimits:
    lower: np.ndarray  # (n,) lower bound per joint (rad; gripper normalized 0)
    upper: np.ndarray  # (n,) upper bound per joint (rad; gripper normalized 1)
    max_step: np.ndarray  # (n,) largest change per control tick, > 0

    def __post_init__(self):
        lo, hi, st = (np.asarray(a, dtype=np.float64) for a in (self.lower, self.upper, self.max_step))
        if not (lo.ndim == 1 and lo.shape == hi.shape == st.shape):
            raise ValueError(
                f"SafetyLimits: lower, upper, max_step must be (n,) arrays, got {lo.shape}, "
                f"{hi.shape}, {st.shape}"
            )
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo <= hi)):
            raise ValueError("SafetyLimits: need finite lower <= upper")
        if not (np.all(np.isfinite(st)) and np.all(st > 0)):
            raise ValueError("SafetyLimits: max_step must be finite and > 0")
        for name, arr in (("lower", lo), ("upper", hi), ("max_step", st)):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    @property
    def n(self) -> int:
        return int(self.lower.shape[0])

    @classmethod
    def from_model(cls, model, rate_hz: float) -> SafetyLimits:
        """Limits of an ArmModel (duet.hardware.arm_model) at a control rate."""
        return cls(lower=model.lower, upper=model.upper, max_step=model.max_step(rate_hz))


def _check(target, n: int, names: Sequence[str] | None, what: str) -> np.ndarray:
    try:
        t = np.asarray(target, dtype=np.float64)
    except (TypeError, ValueError):
        raise UnsafeCommandError(f"unsafe {what}: not numeric ({type(target).__name__}); holding") from None
    if t.shape != (n,):
        raise UnsafeCommandError(f"unsafe {what}: shape {t.shape}, expected ({n},); holding the last command")
    bad = ~np.isfinite(t)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        joint = names[i] if names is not None and i < len(names) else f"joint {i}"
        raise UnsafeCommandError(f"unsafe {what}: {joint} is {t[i]}; holding the last command")
    return t


def safe_command(
    target: np.ndarray,
    last: np.ndarray | None,
    limits: SafetyLimits,
    *,
    names: Sequence[str] | None = None,
) -> np.ndarray:
    """The command that may be sent: target clamped to the limits and step-limited from last.

    Raises UnsafeCommandError for a non-finite or wrongly shaped target (or last). `names`
    (joint names) only improve the error message. Returns a new float64 (n,) array.
    """
    t = _check(target, limits.n, names, "command")
    out = np.clip(t, limits.lower, limits.upper)
    if last is not None:
        prev = _check(last, limits.n, names, "last command")
        out = np.clip(out, prev - limits.max_step, prev + limits.max_step)
    return out


@dataclass(frozen=True)
class LimitFault:
    """A planned target beyond its joint's range by more than the fault margin, or not finite."""

    joint: int  # index in the command vector
    row: int  # which target of a (m, n) batch (0 for a single (n,) target)
    value: float
    limit: float  # the bound it lies beyond (nan for a non-finite value)

    @property
    def excess(self) -> float:
        """How far beyond the limit (inf for a non-finite value)."""
        return abs(self.value - self.limit) if np.isfinite(self.value) else float("inf")


def limit_fault(targets, limits: SafetyLimits, margin) -> LimitFault | None:
    """The worst of `targets` ((n,) or (m, n)) lying outside [lower - margin, upper + margin]:
    a non-finite value first, else the largest excess; None when all lie within. margin: a
    scalar or (n,), >= 0. Pure; raises ValueError for a wrong width."""
    t = np.asarray(targets, dtype=np.float64)
    if t.ndim not in (1, 2) or t.shape[-1] != limits.n:
        raise ValueError(
            f"limit_fault: targets of shape {t.shape}, expected (m, {limits.n}) for {limits.n} joints"
        )
    t = t.reshape(-1, limits.n)
    bad = ~np.isfinite(t)
    if bad.any():
        r, j = np.argwhere(bad)[0]
        return LimitFault(int(j), int(r), float(t[r, j]), float("nan"))
    excess = np.maximum(limits.lower - t, t - limits.upper)  # > 0 outside the range
    beyond = excess > np.broadcast_to(np.asarray(margin, dtype=np.float64), (limits.n,))
    if not beyond.any():
        return None
    r, j = np.unravel_index(int(np.argmax(np.where(beyond, excess, -np.inf))), t.shape)
    v = float(t[r, j])
    return LimitFault(int(j), int(r), v, float(limits.upper[j] if v > limits.upper[j] else limits.lower[j]))


def ramp_step(current: np.ndarray, target: np.ndarray, max_step: np.ndarray) -> np.ndarray:
    """One tick of the start-up ramp: move from current toward target by at most max_step.

    Used to bring a follower to the leader's pose slowly before mirroring starts: call it
    every tick until `np.allclose(result, target)`.
    """
    cur = np.asarray(current, dtype=np.float64)
    tgt = np.asarray(target, dtype=np.float64)
    step = np.asarray(max_step, dtype=np.float64)
    if not (np.all(np.isfinite(cur)) and np.all(np.isfinite(tgt))):
        raise UnsafeCommandError("unsafe ramp: current or target pose is not finite; holding")
    return cur + np.clip(tgt - cur, -step, step)


def ramp_done(current: np.ndarray, target: np.ndarray, tol: float = 1e-6) -> bool:
    """True when a ramp has reached its target (within tol per joint)."""
    return bool(np.all(np.abs(np.asarray(current) - np.asarray(target)) <= tol))
